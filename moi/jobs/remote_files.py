"""A job's files on a cluster reached over SSH (a scheduler context with a ``host``): listed and read there over
SFTP, confined to its directory there, ``<workdir>/<job id>``, as moi's own job directories are here.

A path is checked by the rules of ``moi.jobfiles.reading`` (no ``..``, not absolute, no NUL byte), and a file is
read only when a walk of the job's directory that follows no link finds it a regular file: a link planted there,
or one on the way to it, is never followed. Each context has one runner (one SSH connection) per process, kept
here and made again when the context's settings change.
"""

from __future__ import annotations

import builtins
import io
import os
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO

from moi.compute.schedulers.poller import runner_for
from moi.compute.schedulers.runner import Runner
from moi.core.errors import JobFilesError, NoSuchFile, PathRefused, UnknownContext
from moi.core.info import Info, is_finished
from moi.core.redact import printable
from moi.core.scheduler_settings import SchedulerSpec
from moi.jobfiles.reading import Entry, confined_names
from moi.storage import process

BUFFER = 256 * 1024  # bytes read over SFTP at a time by an opened file

_lock = threading.Lock()
_runners: dict[str, tuple[SchedulerSpec, Runner]] = {}


@dataclass(frozen=True)
class Place:
    """Where a job's files are on its cluster: the runner that reaches them, and its directory there."""

    runner: Runner
    directory: str


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
            f"The files of job {info['id']} are on {printable(seen.get('where'))}, the cluster of context "
            f"{printable(context, 40)}, which is not configured here as a scheduler context with a host"
        )
    return Place(runner_of(spec), f"{spec.workdir.rstrip('/')}/{info['id']}")


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
    """A file of the job's directory there, for reading (binary, seekable), read over SFTP as it is asked for."""
    names = confined_names(job_id, path)
    if not names:
        raise PathRefused(job_id, path, "it names the job directory itself, not a file in it")
    relative = "/".join(names)
    sizes = {entry.path: entry.size for entry in place.runner.list_files(place.directory)}
    if relative not in sizes:
        if any(name.startswith(relative + "/") for name in sizes):
            raise PathRefused(job_id, path, "it is not a regular file")
        raise NoSuchFile(job_id, path)
    remote = _RemoteFile(place.runner, f"{place.directory}/{relative}", sizes[relative])
    return io.BufferedReader(remote, BUFFER)


class _RemoteFile(io.RawIOBase):
    """A file on the cluster, read in pieces over SFTP; its size as it was when it was found."""

    def __init__(self, runner: Runner, path: str, size: int) -> None:
        super().__init__()
        self.runner, self.path, self.size, self.position = runner, path, size, 0

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
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self.position))
        if wanted == 0:
            return 0
        try:
            data = self.runner.read_file(self.path, self.position, wanted)
        except FileNotFoundError:
            return 0  # removed there meanwhile: its end
        view[: len(data)] = data
        self.position += len(data)
        return len(data)
