"""Reading a job's directory: its files listed and opened, confined to it, and counted.

Reading is confined: a path is split into names, and each is opened relative to
the directory before it with ``O_NOFOLLOW``, so ``..``, an absolute path, a NUL
byte, or a symbolic link anywhere on the way (even one swapped in between a
check and the open) is refused, and nothing outside the directory is read.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from moi.core.errors import NoSuchFile, PathRefused
from moi.jobfiles.by_descriptor import DIRECTORY, FILE, tree
from moi.jobfiles.directory import current_directory

LIST_PATH_MAX = 4096  # characters of the longest path a listing shows (Linux's PATH_MAX): bounds its memory


@dataclass(frozen=True)
class Entry:
    """One entry of a job's files: its path in the job directory, whether it is a directory, its size."""

    path: str
    is_dir: bool
    size: int


def list(job_id: str, path: str = "", recursive: bool = True) -> builtins.list[Entry]:  # noqa: A001
    """The entries under ``path`` of the job's directory, sorted by path; links are not followed (nor listed)."""
    names = confined_names(job_id, path)
    fd = _open_directory(job_id, names)
    try:
        entries = builtins.list(_listed(job_id, fd, "/".join(names), recursive))
    except OSError as error:  # a directory moved while it was listed
        raise PathRefused(job_id, path, error.strerror or str(error)) from None
    finally:
        os.close(fd)
    return sorted(entries, key=lambda entry: entry.path)


def open(job_id: str, path: str) -> BinaryIO:  # noqa: A001
    """A file of the job's directory, opened for reading (binary)."""
    names = confined_names(job_id, path)
    if not names:
        raise PathRefused(job_id, path, "it names the job directory itself, not a file in it")
    parent = _open_directory(job_id, names[:-1])
    try:
        fd = os.open(names[-1], FILE, dir_fd=parent)
    except OSError as error:
        raise _refusal(job_id, path, error) from None
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PathRefused(job_id, path, "it is not a regular file")
    os.set_blocking(fd, True)
    return builtins.open(fd, "rb")


def summary(directory: str) -> dict[str, int]:
    """How many regular files the directory holds, and their total size (links not followed)."""
    count = size = 0
    top = os.open(directory, DIRECTORY)
    try:
        for _, _, entries in tree(top):
            for entry in entries:
                with contextlib.suppress(OSError):  # gone meanwhile: not counted
                    if entry.is_file(follow_symlinks=False):
                        size += entry.stat(follow_symlinks=False).st_size
                        count += 1
    finally:
        os.close(top)
    return {"count": count, "size": size}


def confined_names(job_id: str, path: str) -> builtins.list[str]:
    """``path`` as names inside the job directory; PathRefused for one that could leave it (also the rule
    for a job's files on a cluster, ``moi.jobs.job_files``)."""
    if "\x00" in path:
        raise PathRefused(job_id, path, "it holds a NUL byte")
    if path.startswith("/") or path.startswith("\\"):
        raise PathRefused(job_id, path, "it is absolute; give a path inside the job directory")
    names = [name for name in path.split("/") if name not in ("", ".")]
    if ".." in names:
        raise PathRefused(job_id, path, "it climbs out with '..'")
    return names


def _open_directory(job_id: str, names: builtins.list[str]) -> int:
    """A file descriptor of the directory ``names`` lead to, each opened without following links."""
    try:
        fd = os.open(current_directory(job_id), DIRECTORY)
    except OSError:
        raise NoSuchFile(job_id, "") from None
    for index, name in enumerate(names):
        try:
            inner = os.open(name, DIRECTORY, dir_fd=fd)
        except OSError as error:
            os.close(fd)
            raise _refusal(job_id, "/".join(names[: index + 1]), error) from None
        os.close(fd)
        fd = inner
    return fd


def _refusal(job_id: str, path: str, error: OSError) -> Exception:
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return PathRefused(job_id, path, "it goes through a symbolic link or a file")
    return NoSuchFile(job_id, path)


def _listed(job_id: str, fd: int, prefix: str, recursive: bool) -> Iterator[Entry]:
    """The entries under the directory open at ``fd``; links are neither followed nor listed."""
    if not recursive:
        with os.scandir(fd) as scanned:
            yield from _entries(job_id, prefix, builtins.list(scanned))
        return
    for _, names, entries in tree(fd):
        yield from _entries(job_id, "/".join(filter(None, [prefix, *names])), entries)


def _entries(job_id: str, prefix: str, found: builtins.list[os.DirEntry[str]]) -> Iterator[Entry]:
    for entry in found:
        path = f"{prefix}/{entry.name}" if prefix else entry.name
        if len(path) > LIST_PATH_MAX:
            why = f"it holds paths longer than {LIST_PATH_MAX} characters; list its directories one at a time"
            raise PathRefused(job_id, prefix[:80] + "...", why)
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            yield Entry(path, True, 0)
        elif entry.is_file(follow_symlinks=False):
            yield Entry(path, False, entry.stat(follow_symlinks=False).st_size)
