"""Moving files by URI, for job files: inputs and resources in, outputs out.

What may be fetched is the operator's grant (``moi.jobfiles.input_policy``): ``http(s)://`` by
default, ``file://`` inside the input roots, any other listed scheme through fsspec
when it is installed (``pip install moi[fsspec]``: s3, gcs, sftp, ...). moi fetches
http(s) itself: it resolves the host once, checks every address, connects to the one
it checked, checks each redirect again (at most MAX_REDIRECTS), and bounds the size
and the total time (a socket still open at the deadline is shut down). A
``|gunzip`` suffix on a URI decompresses what it names as it is fetched. Whatever
goes wrong is one line (FetchFailed), never a traceback, and never the content of
what answered.
Resources are fetched once per host into a cache shared by every job there
(``MOI_RESOURCE_CACHE``, by default ``~/.cache/moi/resources``), under a file
lock, so ten jobs starting at once on one host fetch a resource once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gzip
import hashlib
import http.client
import os
import shutil
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from moi.core.errors import FetchFailed, InputRefused, MoiError
from moi.core.redact import printable
from moi.jobfiles.input_policy import FETCHED, Address, Policy

GUNZIP = "|gunzip"
CHUNK = 1 << 20
CONNECT_TIMEOUT = 10.0  # seconds to connect to one address
IDLE_TIMEOUT = 30.0  # seconds a server may stay silent
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


def is_uri(text: str) -> bool:
    """Whether an input names a URI (``scheme://...``) rather than a local path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1


def name_of(uri: str) -> str:
    """The file name a URI gives an input: the last part of its path, without ``|gunzip`` and ``.gz``."""
    plain, gunzip = _split(uri)
    try:
        path = urllib.parse.urlsplit(plain).path
    except ValueError:  # not a URI urllib can split (http://[::1): the policy refuses it by name "input"
        path = ""
    name = os.path.basename(path.rstrip("/")) or "input"
    return name[: -len(".gz")] if gunzip and name.endswith(".gz") else name


def fetch(uri: str, target: str, policy: Policy | None = None) -> None:
    """Copy what ``uri`` names to the file ``target``, as ``policy`` (by default the strict one)
    allows; FetchFailed says in one line why it could not."""
    policy = policy or Policy()
    plain, gunzip = _split(uri)
    partial = f"{target}.partial"
    deadline = _Deadline(policy.timeout)
    try:
        with _reading(plain, policy, deadline) as source, open(partial, "wb") as out:
            _copy(uri, gzip.GzipFile(fileobj=source) if gunzip else source, out, policy.max_bytes, deadline)
        os.replace(partial, target)
    except InputRefused as error:  # the policy's refusal of a file:// path
        _forget(partial)
        raise FetchFailed(uri, error.why) from None
    except MoiError:  # FetchFailed says it all; a cancel goes through as it is
        _forget(partial)
        raise
    except Exception as error:  # http.client, ssl, socket, gzip and fsspec raise their own: each is one line
        _forget(partial)
        raise FetchFailed(uri, deadline.reason() or _reason(error)) from None


def upload(directory: str, uri: str) -> None:
    """Copy a directory's files to ``uri`` (a ``file://`` directory, or anything fsspec can write)."""
    scheme = urllib.parse.urlsplit(uri).scheme
    try:
        if scheme == "file":
            shutil.copytree(directory, _local_path(uri), dirs_exist_ok=True, symlinks=True)
            return
        filesystem, root = _fsspec(uri).core.url_to_fs(uri)
        filesystem.put(directory.rstrip("/") + "/", root, recursive=True)
    except FetchFailed:
        raise
    except Exception as error:  # fsspec's backends raise their own errors
        raise FetchFailed(uri, _reason(error)) from None


def resource(uri: str, cache: str, policy: Policy | None = None) -> str:
    """The path of ``uri`` in this host's cache, fetched first if no job here has fetched it yet."""
    policy = policy or Policy()
    why = policy.uri_problem(_split(uri)[0], resolve=False)  # a cached copy, too, is only for a URI still granted
    if why:
        raise FetchFailed(uri, why)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:32]
    path = os.path.join(cache, digest)
    if os.path.exists(path):
        return path
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first job here fetches; the others wait, then find it
        if not os.path.exists(path):
            fetch(uri, path, policy)
    return path


def default_cache() -> str:
    configured = os.environ.get("MOI_RESOURCE_CACHE")
    if configured:
        return configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "moi", "resources")


def _split(uri: str) -> tuple[str, bool]:
    return (uri[: -len(GUNZIP)], True) if uri.endswith(GUNZIP) else (uri, False)


@contextmanager
def _reading(uri: str, policy: Policy, deadline: _Deadline) -> Iterator[IO[bytes]]:
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    # http(s): the address is checked as it is connected to; fsspec connects itself: checked here
    why = policy.uri_problem(uri, resolve=scheme not in FETCHED)
    if why:
        raise FetchFailed(uri, why)
    if scheme == "file":
        with open(policy.open_in_roots("file", _local_path(uri)), "rb") as handle:
            yield handle
    elif scheme in FETCHED:
        with _http_get(uri, policy, deadline) as answer:
            yield answer
    else:
        with _fsspec(uri).open(uri, "rb") as handle:
            yield handle


def _copy(uri: str, source: IO[bytes] | gzip.GzipFile, out: IO[bytes], limit: int, deadline: _Deadline) -> None:
    """``source`` into ``out``, at most ``limit`` bytes, before the deadline."""
    read = getattr(source, "read1", source.read)  # read1: what has come, without waiting for a whole chunk
    written = 0
    while chunk := read(CHUNK):
        written += len(chunk)
        if written > limit:
            raise FetchFailed(uri, f"it is over {limit} bytes ([files] fetch_max_bytes)")
        if deadline.passed():
            raise FetchFailed(uri, deadline.reason() or "")
        out.write(chunk)
    if deadline.passed():
        raise FetchFailed(uri, deadline.reason() or "")


# http(s), to the address checked ---------------------------------------------------------


@contextmanager
def _http_get(uri: str, policy: Policy, deadline: _Deadline) -> Iterator[http.client.HTTPResponse]:
    """The answer to GET ``uri``, after at most MAX_REDIRECTS redirects, each checked as the first."""
    current = uri
    for redirects in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in FETCHED or scheme not in policy.schemes:
            where = printable(scheme, 40) or "a relative"
            raise FetchFailed(uri, f"after a redirect, {where}: URIs are not allowed here")
        connection = _connect(uri, parts, policy, deadline, redirects > 0)
        try:
            with deadline.guarding(connection):
                connection.request("GET", _target(parts), headers={"Accept-Encoding": "identity", "User-Agent": "moi"})
                answer = connection.getresponse()
                location = answer.getheader("Location")
                if answer.status in REDIRECTS and location:
                    current = urllib.parse.urljoin(current, location.strip())
                    continue
                _check_answer(uri, answer, policy.max_bytes)
                yield answer
            if deadline.passed():  # the deadline shut the socket: what came is not all
                raise FetchFailed(uri, deadline.reason() or "")
            if answer.length:  # read1 ends at a closed connection without saying so
                raise FetchFailed(uri, "the server sent less than it announced")
            return
        finally:
            connection.close()
    raise FetchFailed(uri, f"it redirects more than {MAX_REDIRECTS} times")


def _connect(
    uri: str, parts: urllib.parse.SplitResult, policy: Policy, deadline: _Deadline, redirected: bool
) -> _Pinned:
    """A connection to the host of ``parts``, made to an address the policy allows (resolved once, here)."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses, why = policy.host_problem(host, port)
    if why:
        raise FetchFailed(uri, f"after a redirect, {why}" if redirected else why)
    if deadline.passed():
        raise FetchFailed(uri, deadline.reason() or "")
    timeout = min(CONNECT_TIMEOUT, deadline.left())
    connection = _Pinned(parts.scheme.lower() == "https", host, port, addresses, timeout)
    connection.connect()
    connection.sock.settimeout(min(IDLE_TIMEOUT, max(deadline.left(), 0.1)))
    return connection


class _Pinned(http.client.HTTPSConnection):
    """An HTTP(S) connection to a host name, made to the addresses checked for it: no second lookup.

    The Host header, and for https the certificate's name and SNI, stay the name's.
    """

    def __init__(self, tls: bool, host: str, port: int, addresses: list[Address], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.tls = tls
        self._create_connection = functools.partial(_first_connecting, addresses)

    def connect(self) -> None:
        if self.tls:
            super().connect()
        else:
            http.client.HTTPConnection.connect(self)


def _first_connecting(addresses: list[Address], where: tuple[str, int], timeout: float, *_: Any) -> socket.socket:
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((str(address), where[1]), timeout)
        except OSError as refused:
            error = refused
    raise error


def _target(parts: urllib.parse.SplitResult) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _check_answer(uri: str, answer: http.client.HTTPResponse, limit: int) -> None:
    if answer.status != 200:
        raise FetchFailed(uri, f"HTTP {answer.status} {printable(answer.reason, 80)}")
    length = answer.getheader("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise FetchFailed(uri, f"it is over {limit} bytes ([files] fetch_max_bytes)")


class _Deadline:
    """The total time of one fetch: at the deadline, an open connection is shut down, so no read waits on."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.cut = False

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.cut or self.left() <= 0

    def reason(self) -> str | None:
        return f"it took longer than {self.seconds:g} s ([files] fetch_timeout)" if self.passed() else None

    @contextmanager
    def guarding(self, connection: http.client.HTTPConnection) -> Iterator[None]:
        timer = threading.Timer(max(self.left(), 0), self._shut, (connection.sock,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _shut(self, sock: socket.socket | None) -> None:
        self.cut = True
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# the rest ------------------------------------------------------------------------------


def _local_path(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise FetchFailed(uri, "a file:// URI names a file on this host: file:///path")
    return urllib.parse.unquote(parts.path)


def _fsspec(uri: str):  # type: ignore[no-untyped-def]
    try:
        import fsspec
    except ImportError:
        scheme = urllib.parse.urlsplit(uri).scheme
        raise FetchFailed(uri, f"{scheme}:// needs fsspec: pip install 'moi[fsspec]'") from None
    return fsspec


# What went wrong, in words that carry nothing of what answered (a status line may be a secret's reply).
_HTTP_PROBLEMS: list[tuple[type[BaseException], str]] = [
    (http.client.RemoteDisconnected, "the server closed the connection without an answer"),
    (http.client.IncompleteRead, "the server sent less than it announced"),
    (http.client.BadStatusLine, "the server's answer is not HTTP"),
    (http.client.LineTooLong, "the server's answer is not HTTP"),
    (http.client.HTTPException, "the server's answer is not valid HTTP"),
    (ssl.SSLCertVerificationError, "its TLS certificate does not verify"),
    (ssl.SSLError, "TLS failed"),
    (TimeoutError, "the server did not answer in time"),
    (socket.gaierror, "the name does not resolve"),
    (EOFError, "it ended early (a truncated or not gzip file)"),
    (gzip.BadGzipFile, "it is not gzip data"),
]


def _reason(error: BaseException) -> str:
    for kind, text in _HTTP_PROBLEMS:
        if isinstance(error, kind):
            return text
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return printable(str(error).splitlines()[0] if str(error).strip() else type(error).__name__, 200)


def _forget(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
