"""Directories read by descriptor, never through a link: the flags, and a walk of a whole tree.

A job's directory (and an operator's input root) may hold anything a job made: links planted to
lead a reader out, FIFOs that would hang an open, trees thousands of levels deep. So every name is
opened relative to the directory before it with ``O_NOFOLLOW``, a file with ``O_NONBLOCK``, and a
tree is walked without recursion, one descriptor open at a time.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang the open


@dataclass
class _Level:
    """A directory of the walk's current chain: its name, who it is, the subdirectories still to enter."""

    name: str
    identity: tuple[int, int]
    pending: list[str]


def tree(top: int, remove: bool = False) -> Iterator[tuple[int, list[str], list[os.DirEntry[str]]]]:
    """Every directory under the one open at ``top``, itself first, depth first: ``(fd, names, entries)``.

    ``names`` lead from ``top`` to it; all three are valid until the next step. There is no
    recursion, whatever the depth, and one descriptor is open besides ``top``: the walk goes down
    by name without following links, and back up through ``..``, checked to be the very directory
    it came from (device and inode), so a directory moved meanwhile stops the walk (OSError) rather
    than leading it out of the tree. ``remove``: each directory is removed once left; the caller
    has emptied it of everything but directories.
    """
    fd = os.open(".", DIRECTORY, dir_fd=top)
    chain: list[_Level] = []  # from ``top`` down to the directory open at ``fd``
    names: list[str] = []
    try:
        while True:
            with os.scandir(fd) as found:
                entries = list(found)
            subdirectories = [entry.name for entry in reversed(entries) if entry.is_dir(follow_symlinks=False)]
            chain.append(_Level(names[-1] if names else "", _identity(fd), subdirectories))
            yield fd, names, entries
            while (inner := _enter_next(fd, chain[-1])) is None:  # up until a directory has one left to enter
                left = chain.pop()
                if not chain:
                    return
                names.pop()
                below, fd = fd, -1
                fd = _up(below, chain[-1].identity)
                if remove:
                    os.rmdir(left.name, dir_fd=fd)
            os.close(fd)
            fd, name = inner
            names.append(name)
    finally:
        if fd >= 0:
            os.close(fd)


def _identity(fd: int) -> tuple[int, int]:
    held = os.fstat(fd)
    return held.st_dev, held.st_ino


def _enter_next(fd: int, level: _Level) -> tuple[int, str] | None:
    """The next subdirectory of ``level`` (open at ``fd``) opened, and its name; None when none is left."""
    while level.pending:
        name = level.pending.pop()
        try:
            return os.open(name, DIRECTORY, dir_fd=fd), name
        except OSError:  # swapped for a link, or gone, meanwhile: not entered
            continue
    return None


def _up(fd: int, expected: tuple[int, int]) -> int:
    """The parent of the directory open at ``fd`` (closed), if it is still the one the walk came from."""
    try:
        parent = os.open("..", DIRECTORY, dir_fd=fd)
    finally:
        os.close(fd)
    if _identity(parent) != expected:
        os.close(parent)
        raise OSError(errno.ESTALE, "a directory was moved while it was walked; the walk stopped there")
    return parent
