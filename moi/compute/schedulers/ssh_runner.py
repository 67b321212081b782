"""A login node reached over SSH: a scheduler's commands run there, its job directories live there (SFTP).

``SshRunner`` is the ``Runner`` (``moi.compute.schedulers.runner``) of a scheduler context with a ``host``.
The cluster shares no filesystem with moi: every file goes over SFTP. It is called from plain threads
(the poller's, the web handlers' ``to_thread``), so it runs asyncssh on one private event loop in a
daemon thread of its own, and each call waits there for its coroutine. One connection (and one SFTP
client on it) is made on first use and kept; one that dropped is made again on the next call.

The host's key is always checked, against ``known_hosts`` (default ``~/.ssh/known_hosts``); an unknown
or changed key, a refused login, a refused or silent port, a dropped connection are ``SchedulerUnavailable``,
one line naming the cluster and why (never a key's content).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import posixpath
import shlex
import stat
import threading
import warnings
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from moi.compute.schedulers import sftp_files
from moi.compute.schedulers.runner import COMMAND_TIMEOUT, Entry, OpenedFile, Ran
from moi.core.errors import SchedulerUnavailable
from moi.core.redact import printable
from moi.core.scheduler_settings import SchedulerSpec

with warnings.catch_warnings():  # asyncssh touches cryptography's DSA at import, which warns it is deprecated
    warnings.simplefilter("ignore")
    import asyncssh

CONNECT_TIMEOUT = 10.0  # seconds to reach the login node and log in
FILE_TIMEOUT = 120.0  # seconds one file operation may take (read a big file in pieces: offset, length)
KEEPALIVE = 15.0  # seconds between keepalives: a connection whose peer is gone is closed after 3 unanswered
CLOSE_TIMEOUT = 10.0
NOT_INSTALLED = 127  # the remote shell's exit status for a command it cannot find

T = TypeVar("T")
Connection = asyncssh.SSHClientConnection
Operation = Callable[[Connection], Awaitable[T]]  # what a call does on the loop, with the connection


class SshRunner:
    """A login node over SSH: ``run`` through its shell (each argv item quoted), files through SFTP."""

    def __init__(self, spec: SchedulerSpec, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        if not spec.host:
            raise ValueError(f"scheduler context {spec.name} has no host to reach over SSH")
        self.spec = spec
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()  # guards the loop's start and stop; the rest lives on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connecting: asyncio.Lock | None = None  # one per loop: an asyncio lock is bound to its loop
        self._connection: Connection | None = None
        self._sftp: tuple[Connection, asyncssh.SFTPClient] | None = None
        self._calls: set[asyncio.Task[Any]] = set()  # the calls under way on the loop

    @property
    def where(self) -> str:
        return self.spec.where

    # the Runner interface, for threads --------------------------------------------------------

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout: float = COMMAND_TIMEOUT) -> Ran:
        if not argv:
            raise ValueError("run needs a command")
        return self._call(lambda connection: self._run(connection, list(argv), stdin, timeout), timeout)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = _checked(path)
        self._call(lambda connection: self._write_file(connection, path, data, mode), FILE_TIMEOUT)

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        path = _checked(path)
        return self._call(lambda connection: self._read_file(connection, path, offset, length), FILE_TIMEOUT)

    def list_files(self, directory: str) -> list[Entry]:
        directory = _checked(directory)
        return self._call(lambda connection: self._list_files(connection, directory), FILE_TIMEOUT)

    def open_file(self, directory: str, names: list[str]) -> OpenedFile:
        """``directory/names...`` opened once (each component checked, no link), read by its handle."""
        for name in names:
            _checked(name)
        directory = _checked(directory)
        return self._call(lambda connection: self._open_file(connection, directory, list(names)), FILE_TIMEOUT)

    def make_dirs(self, path: str) -> None:
        path = _checked(path)
        self._call(lambda connection: self._make_dirs(connection, path), FILE_TIMEOUT)

    def close(self) -> None:
        """Close the connection and stop the loop's thread; the next call starts both again."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        # Closing as well as it can: should the loop not answer, its thread is a daemon.
        with suppress(concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shut_down(), loop).result(CLOSE_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CLOSE_TIMEOUT)
        if not thread.is_alive():
            loop.close()

    # the loop ------------------------------------------------------------------------------------

    def _call(self, operation: Operation[T], timeout: float) -> T:
        """``operation``'s result, run on the loop with the connection; its exceptions raised in this thread."""
        loop = self._running_loop()
        coroutine = self._tracked(operation, timeout)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # close() closed that loop meanwhile
            coroutine.close()
            raise SchedulerUnavailable(f"the connection to {self.where} was closed") from None
        try:  # the operation keeps its own time; this limit only guards against a loop that went away
            return future.result(timeout + self.connect_timeout + CLOSE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise SchedulerUnavailable(f"{self.where} did not answer within {timeout:g}s") from None
        except concurrent.futures.CancelledError:
            raise SchedulerUnavailable(f"the connection to {self.where} was closed") from None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"moi ssh {self.where}", daemon=True)
                self._connecting = asyncio.Lock()
                self._loop, self._thread = loop, thread
                thread.start()
            return self._loop

    async def _tracked(self, operation: Operation[T], timeout: float) -> T:
        """``_guarded``, known to be under way while it is: close() cancels the calls under way, and only them."""
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            return await self._guarded(operation, timeout)
        finally:
            self._calls.discard(task)

    async def _guarded(self, operation: Operation[T], timeout: float) -> T:
        """One operation within ``timeout``, connected first if need be; the connection it failed on is dropped."""
        used: list[Connection] = []

        async def attempt() -> T:
            used.append(await self._connected())
            return await operation(used[0])

        try:
            return await asyncio.wait_for(attempt(), timeout)
        except TimeoutError:  # asyncssh's own (a command's timeout) is one too
            await self._drop(*used)  # a connection gone silent is the usual cause: the next call makes a new one
            raise SchedulerUnavailable(f"{self.where} did not answer within {timeout:g}s") from None
        except (asyncssh.DisconnectError, asyncssh.ChannelOpenError, ConnectionError) as error:
            await self._drop(*used)
            raise SchedulerUnavailable(f"lost the connection to {self.where}: {_reason(error)}") from None
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection) as error:
            await self._drop(*used)
            raise SchedulerUnavailable(f"lost the SFTP session on {self.where}: {_reason(error)}") from None

    async def _shut_down(self) -> None:
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if self._connection is not None:
            await self._drop(self._connection)

    # the connection --------------------------------------------------------------------------------

    async def _connected(self) -> Connection:
        assert self._connecting is not None
        async with self._connecting:
            if self._connection is None or self._connection.is_closed():
                if self._connection is not None:
                    await self._drop(self._connection)
                self._connection = await self._connect()
            return self._connection

    async def _sftp_client(self, connection: Connection) -> asyncssh.SFTPClient:
        """The SFTP client on ``connection``: started on first use, kept with it."""
        assert self._connecting is not None
        async with self._connecting:
            if self._sftp is None or self._sftp[0] is not connection:
                # surrogateescape: a name that is not UTF-8 is not an error of the whole directory (sftp_files skips it)
                self._sftp = (connection, await connection.start_sftp_client(path_errors="surrogateescape"))
            return self._sftp[1]

    async def _connect(self) -> Connection:
        known_hosts = self.spec.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        if not os.path.isfile(known_hosts):
            raise SchedulerUnavailable(
                f"cannot check the host key of {self.where}: no known_hosts file {known_hosts}; "
                "add the login node's key there, or set known_hosts"
            )
        try:
            return await asyncssh.connect(
                self.spec.host,
                port=self.spec.port,
                username=self.spec.user or (),
                client_keys=[self.spec.key] if self.spec.key else (),
                known_hosts=known_hosts,
                connect_timeout=self.connect_timeout,
                keepalive_interval=KEEPALIVE,
                keepalive_count_max=3,
            )
        except Exception as error:  # noqa: BLE001 - each kind becomes one line below
            raise SchedulerUnavailable(self._refusal(error, known_hosts)) from None

    def _refusal(self, error: Exception, known_hosts: str) -> str:
        """One line on why connecting failed; an exception it does not know is raised as it is."""
        where = f"cannot reach {self.where}"
        if isinstance(error, asyncssh.HostKeyNotVerifiable):
            return f"{where}: its host key is not trusted by {known_hosts} (unknown or changed); check it and add it"
        if isinstance(error, asyncssh.PermissionDenied):
            key = f"the key {self.spec.key}" if self.spec.key else "the default keys (~/.ssh/id_*)"
            return f"{where}: it refused the login with {key}; add its public key to the account's authorized_keys"
        if isinstance(error, asyncssh.KeyImportError) or (isinstance(error, OSError) and error.filename):
            return f"{where}: cannot use the key {self.spec.key}: {_reason(error)}"
        if isinstance(error, TimeoutError):
            return f"{where}: no answer within {self.connect_timeout:g}s"
        if isinstance(error, ConnectionRefusedError):
            return f"{where}: connection refused (no sshd on port {self.spec.port}?)"
        if isinstance(error, OSError | asyncssh.Error):
            return f"{where}: {_reason(error)}"
        raise error

    async def _drop(self, connection: Connection | None = None) -> None:
        """Close ``connection``, and forget it if it is the one kept (another call may have made a new one)."""
        if connection is None:
            return  # it failed before it had one: nothing to drop
        if connection is self._connection:
            self._connection = self._sftp = None
        connection.close()
        with suppress(TimeoutError, OSError, asyncssh.Error):  # it is gone either way
            await asyncio.wait_for(connection.wait_closed(), CLOSE_TIMEOUT)

    # the operations, on the loop ------------------------------------------------------------------

    async def _run(self, connection: Connection, argv: list[str], stdin: str | None, timeout: float) -> Ran:
        given = stdin.encode() if stdin is not None else None
        done = await connection.run(shlex.join(argv), input=given, encoding=None, timeout=timeout, check=False)
        if done.returncode is None:
            raise SchedulerUnavailable(f"lost the connection to {self.where} while {printable(argv[0], 80)} ran")
        if done.returncode == NOT_INSTALLED:
            raise SchedulerUnavailable(f"{printable(argv[0], 80)} is not installed on {self.where}")
        return Ran(done.returncode, _text(done.stdout), _text(done.stderr))

    async def _write_file(self, connection: Connection, path: str, data: bytes, mode: int) -> None:
        sftp = await self._sftp_client(connection)
        with _as_os_error(path):
            parent = posixpath.dirname(path)
            if parent:
                await sftp.makedirs(parent, attrs=asyncssh.SFTPAttrs(permissions=0o755), exist_ok=True)
            await _refuse_link(sftp, path)
            async with sftp.open(path, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode)) as remote:
                await remote.write(data)
                await remote.chmod(mode)  # as asked, whatever the server's umask or an older file's mode

    async def _read_file(self, connection: Connection, path: str, offset: int, length: int | None) -> bytes:
        sftp = await self._sftp_client(connection)
        with _as_os_error(path):
            # SFTP has no O_NOFOLLOW: a link is refused as it is found (a swap in between is a race, not a way)
            if not stat.S_ISREG((await sftp.lstat(path)).permissions or 0):
                raise PermissionError(f"{path} is not a regular file there; links are not followed")
            async with sftp.open(path, "rb") as remote:
                if length is None:  # to its end: asyncssh's own "to the end" fails from past the end
                    length = max(0, ((await remote.stat()).size or 0) - offset)
                if length == 0:
                    return b""
                data: bytes = await remote.read(length, offset)
                return data

    async def _list_files(self, connection: Connection, directory: str) -> list[Entry]:
        sftp = await self._sftp_client(connection)
        with _as_os_error(directory):
            return await sftp_files.walk(sftp, directory)

    async def _open_file(self, connection: Connection, directory: str, names: list[str]) -> _SftpFile:
        sftp = await self._sftp_client(connection)
        with _as_os_error(posixpath.join(directory, *names)):
            remote, size = await sftp_files.open_confined(sftp, directory, names)
        return _SftpFile(self, connection, remote, size, posixpath.join(directory, *names))

    async def _make_dirs(self, connection: Connection, path: str) -> None:
        sftp = await self._sftp_client(connection)
        with _as_os_error(path):
            await sftp.makedirs(path, attrs=asyncssh.SFTPAttrs(permissions=0o755), exist_ok=True)


class _SftpFile:
    """A file opened there: read by its handle (the same file whatever is renamed meanwhile), on the loop."""

    def __init__(
        self, runner: SshRunner, on: Connection, remote: asyncssh.SFTPClientFile, size: int, path: str
    ) -> None:
        self.runner, self.on, self.remote, self.size, self.path = runner, on, remote, size, path

    def read(self, offset: int, length: int) -> bytes:
        return self.runner._call(lambda connection: self._read(connection, offset, length), FILE_TIMEOUT)

    async def _read(self, connection: Connection, offset: int, length: int) -> bytes:
        if connection is not self.on:  # the connection it was opened on is gone: so is its handle
            raise SchedulerUnavailable(f"the connection to {self.runner.where} was closed while a file was read")
        with _as_os_error(self.path):
            data: bytes = await self.remote.read(length, offset) if length > 0 else b""
            return data

    def close(self) -> None:
        with suppress(OSError, SchedulerUnavailable):  # closed with its connection, if that went first
            self.runner._call(self._close, CLOSE_TIMEOUT)

    async def _close(self, connection: Connection) -> None:
        if connection is not self.on:
            return
        with suppress(asyncssh.Error, OSError):
            await self.remote.close()


class _as_os_error:  # noqa: N801 - used as a context manager, like contextlib's
    """SFTP's errors about a file as the OSError the Runner interface promises (FileNotFoundError ...)."""

    KINDS: dict[type[Exception], type[OSError]] = {
        asyncssh.SFTPNoSuchFile: FileNotFoundError,
        asyncssh.SFTPNoSuchPath: FileNotFoundError,
        asyncssh.SFTPPermissionDenied: PermissionError,
        asyncssh.SFTPFileAlreadyExists: FileExistsError,
        asyncssh.SFTPNotADirectory: NotADirectoryError,
        asyncssh.SFTPFileIsADirectory: IsADirectoryError,
    }

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _trace: object) -> None:
        if error is None or not isinstance(error, asyncssh.SFTPError):
            return
        if isinstance(error, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
            return  # the connection's trouble, not the file's: _guarded makes it SchedulerUnavailable
        raised = self.KINDS.get(type(error), OSError)
        raise raised(_errno(raised), _reason(error), self.path) from None


def _errno(kind: type[OSError]) -> int:
    numbers: dict[type[OSError], int] = {
        FileNotFoundError: errno.ENOENT,
        PermissionError: errno.EACCES,
        FileExistsError: errno.EEXIST,
        NotADirectoryError: errno.ENOTDIR,
        IsADirectoryError: errno.EISDIR,
    }
    return numbers.get(kind, errno.EIO)


async def _refuse_link(sftp: asyncssh.SFTPClient, path: str) -> None:
    """OSError when ``path`` is a symbolic link (even a dangling one): an SFTP open would follow it."""
    try:
        attrs = await sftp.lstat(path)
    except asyncssh.SFTPNoSuchFile:
        return
    if stat.S_ISLNK(attrs.permissions or 0):
        raise OSError(errno.ELOOP, "a symbolic link is in the way", path)


def _checked(path: str) -> str:
    """``path`` as given, unless it climbs out with ``..`` (moi's paths never do: a belt against a bad one)."""
    if ".." in path.split("/"):
        raise ValueError(f"refused path {printable(path, 200)!r}: it has a '..' component")
    return path


def _reason(error: BaseException) -> str:
    """An exception's own words, on one line (asyncssh's carry no secret: no key, no password)."""
    if isinstance(error, OSError) and error.errno:  # asyncio's "Connect call failed" hides why: the errno says
        return os.strerror(error.errno)
    reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error) or type(error).__name__
    return printable(str(reason), 200)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")
