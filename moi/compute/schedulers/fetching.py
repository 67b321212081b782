"""A job's files brought home from its cluster: every file of ``<workdir>/<job id>`` there, copied over SFTP
into moi's own job directory here (``moi files fetch JOB``; ``fetch = on-end`` does it as the job ends).

Only regular files come, found without following a link (``Runner.list_files``); each is written here under
the job's directory, never through a link, in pieces, so that a big output never sits whole in memory.
"""

from __future__ import annotations

import os

from moi.compute.schedulers.runner import Runner
from moi.core.errors import PathRefused

PIECE = 4 << 20  # bytes read over SFTP and written here at a time


def bring_home(runner: Runner, there: str, here: str, job_id: str) -> int:
    """The files under ``there`` (on the runner's host) copied under ``here``; how many.
    OSError or SchedulerUnavailable as the runner raises them; PathRefused for a link in the way here."""
    entries = runner.list_files(there)
    os.makedirs(here, mode=0o700, exist_ok=True)  # owner-only, as moi makes job directories
    for entry in entries:
        target = os.path.join(here, entry.path)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        if os.path.realpath(os.path.dirname(target)) != os.path.join(os.path.realpath(here), *_parents(entry.path)):
            raise PathRefused(job_id, entry.path, "a symbolic link is in the way in its directory here")
        _copy(runner, f"{there}/{entry.path}", target)
    return len(entries)


def _parents(path: str) -> list[str]:
    return path.split("/")[:-1]


def _copy(runner: Runner, source: str, target: str) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        offset = 0
        while True:  # to its end as it is now: a file still growing there is copied as far as it has got
            data = runner.read_file(source, offset, PIECE)
            out.write(data)
            offset += len(data)
            if len(data) < PIECE:
                break
