"""A job's files brought home from its cluster: every file of ``<workdir>/<job id>`` there, copied over SFTP
into moi's own job directory here (``moi files fetch JOB``; ``fetch = on-end`` does it as the job ends).

Only regular files come, found without following a link (``Runner.list_files``); each is written here under
the job's directory, never through a link (each directory on the way made and opened by name under the one
before it, a link refused before anything is made through it), in pieces, so that a big output never sits
whole in memory.
"""

from __future__ import annotations

import contextlib
import os

from moi.compute.schedulers.runner import Runner
from moi.core.errors import PathRefused
from moi.jobfiles.by_descriptor import DIRECTORY

PIECE = 4 << 20  # bytes read over SFTP and written here at a time


def bring_home(runner: Runner, there: str, here: str, job_id: str) -> int:
    """The files under ``there`` (on the runner's host) copied under ``here``; how many.
    OSError or SchedulerUnavailable as the runner raises them; PathRefused for a link in the way here."""
    entries = runner.list_files(there)
    os.makedirs(here, mode=0o700, exist_ok=True)  # owner-only, as moi makes job directories
    top = os.open(here, DIRECTORY)
    try:
        for entry in entries:
            parent = _directory_in(top, entry.path.split("/")[:-1], job_id, entry.path)
            try:
                _copy(runner, f"{there}/{entry.path}", parent, entry.path.rsplit("/", 1)[-1])
            finally:
                os.close(parent)
    finally:
        os.close(top)
    return len(entries)


def _directory_in(top: int, names: list[str], job_id: str, path: str) -> int:
    """The directory ``names`` lead to under ``top``, each made (0o700) and opened without following a link:
    a link in the way is refused before anything is made through it."""
    fd = os.dup(top)
    for name in names:
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)  # mkdir never follows a link at its last name
            inner = os.open(name, DIRECTORY, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise PathRefused(job_id, path, "a symbolic link or a file is in the way in its directory here") from None
        os.close(fd)
        fd = inner
    return fd


def _copy(runner: Runner, source: str, directory: int, name: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=directory)
    with os.fdopen(fd, "wb") as out:
        offset = 0
        while True:  # to its end as it is now: a file still growing there is copied as far as it has got
            data = runner.read_file(source, offset, PIECE)
            out.write(data)
            offset += len(data)
            if len(data) < PIECE:
                break
