"""A job's files on a cluster reached over SSH (a scheduler context with a ``host``): listed and read there over
SFTP, confined to its directory there, ``<workdir>/<job id>``, as moi's own job directories are here.

A path is checked by the rules of ``moi.jobfiles.reading`` (no ``..``, not absolute, no NUL byte), and a file is
opened once, when each component of its path was found a directory (the last a regular file) by ``lstat``: a
link planted there, or one on the way to it, is never followed (``moi.compute.schedulers.sftp_files``). The
work runs on a small pool of its own (``in_pool``), so a cluster that stops answering never holds the threads
the rest of the server needs. A user is told a cluster out of reach in one line naming the context, never
its account, key or paths (those go to the log). Each context has one runner (one SSH connection) per process, kept
here and made again when the context's settings change.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from moi.compute.schedulers.poller import runner_for
from moi.compute.schedulers.runner import OpenedFile, Runner
from moi.core.errors import (
    ClusterUnavailable,
    JobFilesError,
    NoSuchFile,
    PathRefused,
    SchedulerUnavailable,
    UnknownContext,
)
from moi.core.info import Info, is_finished
from moi.core.redact import printable
from moi.core.scheduler_settings import SchedulerSpec
from moi.jobfiles.reading import Entry, confined_names
from moi.storage import process

BUFFER = 256 * 1024  # bytes read over SFTP at a time by an opened file
THREADS = 4  # threads of remote file work per process: a silent cluster holds at most these, never the server's
WAITING = 32  # calls of remote file work under way or waiting at most; past that, ClusterUnavailable (503)

log = logging.getLogger("moi.remote_files")
T = TypeVar("T")

_lock = threading.Lock()
_runners: dict[str, tuple[SchedulerSpec, Runner]] = {}
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_slots = threading.BoundedSemaphore(WAITING)


@dataclass(frozen=True)
class Place:
    """Where a job's files are on its cluster: the runner that reaches them, and its directory there."""

    runner: Runner
    directory: str
    context: str = ""


def place_of(info: Info) -> Place | None:
    """Where the job's files are on its cluster; None when they are here (never handed to a cluster over SSH,
    or brought home after its end)."""
    seen = info.get("scheduler")
    if not isinstance(seen, dict) or seen.get("where") in (None, "this machine"):
        return None
    if is_finished(info) and seen.get("fetched"):
        return None
    context = str(info.get("context"))
    try:
        spec = process.context_spec(context).scheduler
    except UnknownContext:
        spec = None
    if spec is None or not spec.remote:
        raise JobFilesError(
            f"The files of job {info['id']} are on the cluster of context "
            f"{printable(context, 40)}, which is not configured here as a scheduler context with a host"
        )
    return Place(runner_of(spec), f"{spec.workdir.rstrip('/')}/{info['id']}", context)


def runner_of(spec: SchedulerSpec) -> Runner:
    """This process's runner for a context: one connection, kept while its settings stay the same."""
    with _lock:
        kept = _runners.get(spec.name)
        if kept is not None and kept[0] == spec:
            return kept[1]
        _runners[spec.name] = (spec, runner_for(spec))
    if kept is not None:
        kept[1].close()
    return _runners[spec.name][1]


def close_all() -> None:
    """Let go of every kept connection (the next use connects again)."""
    with _lock:
        kept = builtins.list(_runners.values())
        _runners.clear()
    for _, runner in kept:
        runner.close()


def list(place: Place, job_id: str, path: str = "", recursive: bool = True) -> builtins.list[Entry]:  # noqa: A001
    """The entries under ``path`` of the job's directory there, as ``moi.jobfiles.reading.list`` gives them here
    (directories are those that hold files: an empty one there is not shown)."""
    prefix = "/".join(confined_names(job_id, path))
    with _told(place, job_id, path):
        files = {entry.path: entry.size for entry in place.runner.list_files(place.directory)}
    if prefix in files:
        raise PathRefused(job_id, path, "it is a file, not a directory")
    under = {name: size for name, size in files.items() if not prefix or name.startswith(prefix + "/")}
    if prefix and not under:
        raise NoSuchFile(job_id, path)
    found: dict[str, Entry] = {}
    for name, size in under.items():
        parts = name[len(prefix) :].lstrip("/").split("/")
        if not recursive:
            parts = parts[:1] if len(parts) == 1 else [parts[0], ""]
        for depth in range(1, len(parts)):
            folder = "/".join(filter(None, [prefix, *parts[:depth]]))
            found[folder] = Entry(folder, True, 0)
        if parts[-1]:
            whole = "/".join(filter(None, [prefix, *parts]))
            found[whole] = Entry(whole, False, size)
    return sorted(found.values(), key=lambda entry: entry.path)


def open(place: Place, job_id: str, path: str) -> BinaryIO:  # noqa: A001
    """A file of the job's directory there, for reading (binary, seekable): opened once over SFTP (each
    component of its path checked to be no link), read by that handle as it is asked for."""
    names = confined_names(job_id, path)
    if not names:
        raise PathRefused(job_id, path, "it names the job directory itself, not a file in it")
    with _told(place, job_id, path):
        opened = place.runner.open_file(place.directory, names)
    return io.BufferedReader(_RemoteFile(opened, job_id, path, _unreachable(place)), BUFFER)


async def in_pool(func: Callable[..., T], *args: Any, bounded: bool = True) -> T:
    """``func(*args)`` on the threads of remote file work, never on the event loop's shared executor: a cluster
    that stops answering holds these, and at most ``WAITING`` calls wait for them (ClusterUnavailable past it).
    ``bounded`` False: never refused (closing a file opened there: else its handle would stay open)."""
    if bounded and not _slots.acquire(blocking=False):
        raise ClusterUnavailable("too many requests for files on clusters are under way; try again later")
    try:
        future = _pool().submit(func, *args)
    except BaseException:
        if bounded:
            _slots.release()
        raise
    if bounded:
        future.add_done_callback(lambda _: _slots.release())  # when the work ends, even if its asker is gone
    return await asyncio.wrap_future(future)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="moi remote files")
        return _executor


def _unreachable(place: Place) -> str:
    """What a user is told when the cluster cannot be reached: the detail (login, key, paths) is for the log."""
    return f"the cluster of context {printable(place.context, 40)} cannot be reached now; try again later"


@contextlib.contextmanager
def _told(place: Place, job_id: str, path: str) -> Iterator[None]:
    """The runner's errors as a user is told them: one line, nothing of the cluster's account or paths."""
    try:
        yield
    except SchedulerUnavailable as error:
        log.warning("files of job %s: %s", job_id, error)
        raise ClusterUnavailable(_unreachable(place)) from None
    except FileNotFoundError:
        raise NoSuchFile(job_id, path) from None
    except PermissionError:
        raise PathRefused(job_id, path, "it is not a regular file, or goes through a link or a file") from None
    except OSError as error:
        raise PathRefused(job_id, path, error.strerror or "it cannot be read there") from None


class _RemoteFile(io.RawIOBase):
    """A file opened on the cluster, read in pieces over SFTP by its handle; its size as it was when opened."""

    def __init__(self, opened: OpenedFile, job_id: str, path: str, unreachable: str) -> None:
        super().__init__()
        self.opened, self.size, self.position = opened, opened.size, 0
        self.job_id, self.path, self.unreachable = job_id, path, unreachable

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:  # Any: a writable buffer (collections.abc.Buffer is 3.12's)
        """OSError (the file's trouble) and ClusterUnavailable (the cluster's) as they come: never a silent end."""
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self.position))
        if wanted == 0:
            return 0
        try:
            data = self.opened.read(self.position, wanted)
        except SchedulerUnavailable as error:
            log.warning("files of job %s: %s", self.job_id, error)
            raise ClusterUnavailable(self.unreachable) from None
        view[: len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.opened.close()
        super().close()
