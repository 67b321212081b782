"""A job directory's files on a login node, over one SFTP client: walked, and opened confined (``SshRunner``'s).

A job made everything under its directory there: names that are not UTF-8, trees thousands of levels
deep, links in place of a directory. So the walk is iterative, bounded (``MAX_ENTRIES`` entries, paths of
at most ``LIST_PATH_MAX`` characters, as a listing here), skips the names it cannot decode (it says how
many), and follows no link. SFTP has no ``O_NOFOLLOW`` nor ``openat``: a file is opened by its whole path
only once each component was found with ``lstat`` to be a directory (the last a regular file), and that
chain is checked again right after the open. What remains is a race: a job that swaps a parent directory
for a link between the checks and the open, and back before the second check (docs/schedulers.md).
"""

from __future__ import annotations

import errno
import logging
import posixpath
import stat
import warnings

from moi.compute.schedulers.runner import Entry
from moi.jobfiles.reading import LIST_PATH_MAX

with warnings.catch_warnings():  # asyncssh touches cryptography's DSA at import, which warns it is deprecated
    warnings.simplefilter("ignore")
    import asyncssh

log = logging.getLogger("moi.sftp")

MAX_ENTRIES = 100_000  # entries (files and directories) a walk reads at most: bounds its memory and time


async def walk(sftp: asyncssh.SFTPClient, top: str) -> list[Entry]:
    """Regular files under ``top``, sorted by path, no link followed; [] when ``top`` is gone.
    OSError for a tree past the bounds (SFTP's own errors are the caller's to map)."""
    found: list[Entry] = []
    pending = [""]  # directories still to read, relative to top: a stack, no recursion
    seen = skipped = 0
    while pending:
        relative = pending.pop()
        try:
            names = await sftp.readdir(posixpath.join(top, relative) if relative else top)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNotADirectory, asyncssh.SFTPPermissionDenied):
            continue  # gone meanwhile, or not ours to read: it has none
        seen += len(names)
        if seen > MAX_ENTRIES:
            raise OSError(errno.EFBIG, f"it holds more than {MAX_ENTRIES} entries", top)
        for name in names:  # a directory's entries come with lstat's attributes: links are links
            filename = str(name.filename)
            if filename in (".", ".."):
                continue
            if not _decodable(filename):
                skipped += 1
                continue
            path = posixpath.join(relative, filename) if relative else filename
            if len(path) > LIST_PATH_MAX:
                raise OSError(errno.ENAMETOOLONG, f"it holds paths longer than {LIST_PATH_MAX} characters", top)
            _add(name.attrs, path, found, pending)
    if skipped:
        log.warning("%s: %d file names that are not UTF-8 were skipped", top, skipped)
    return sorted(found, key=lambda entry: entry.path)


def _add(attrs: asyncssh.SFTPAttrs, path: str, found: list[Entry], pending: list[str]) -> None:
    kind = attrs.permissions or 0
    if stat.S_ISDIR(kind):
        pending.append(path)
    elif stat.S_ISREG(kind):
        found.append(Entry(path, attrs.size or 0, float(attrs.mtime or 0)))


def _decodable(name: str) -> bool:
    """Whether a name the client decoded with ``surrogateescape`` was UTF-8 indeed."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def open_confined(sftp: asyncssh.SFTPClient, top: str, names: list[str]) -> tuple[asyncssh.SFTPClientFile, int]:
    """``top/names...`` opened for reading, and its size: each component a directory found by ``lstat``
    (no link), the last a regular file, checked again right after the open. FileNotFoundError when it is
    not there, PermissionError for a link or a file in the way (SFTP's own errors are the caller's to map)."""
    before = await _chain(sftp, top, names)
    remote = await sftp.open(posixpath.join(top, *names), "rb")
    try:
        after = await _chain(sftp, top, names)
        held = await remote.stat()
        if after != before or not stat.S_ISREG(held.permissions or 0) or _who(held) != before[-1]:
            raise PermissionError(errno.EACCES, "it changed while it was opened; try again", names[-1])
    except BaseException:
        await remote.close()
        raise
    return remote, held.size or 0


async def _chain(sftp: asyncssh.SFTPClient, top: str, names: list[str]) -> list[tuple[int, int, int]]:
    """Who each component of the path is (type and mode, owner, group), from ``top`` down, by ``lstat``."""
    chain = []
    for depth in range(len(names) + 1):
        path = posixpath.join(top, *names[:depth])
        attrs = await sftp.lstat(path)
        kind = attrs.permissions or 0
        last = depth == len(names)
        if not (stat.S_ISREG(kind) if last else stat.S_ISDIR(kind)):
            what = "a regular file" if last else "a directory"
            raise PermissionError(errno.EACCES, f"it is not {what} there; links are not followed", path)
        chain.append(_who(attrs))
    return chain


def _who(attrs: asyncssh.SFTPAttrs) -> tuple[int, int, int]:
    return attrs.permissions or 0, attrs.uid or 0, attrs.gid or 0
