"""Removing job directories: one at once, those of removed jobs, and sweeping those whose job is gone.

Removal never follows a link out of the directory (``moi.jobfiles.by_descriptor.tree``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from moi.core.errors import PathRefused
from moi.core.info import is_uuid
from moi.jobfiles.by_descriptor import DIRECTORY, tree
from moi.jobfiles.directory import directory_of
from moi.storage import loops, process
from moi.storage.store import Store

log = logging.getLogger("moi.files")

SWEEP_GRACE = 600.0  # seconds a directory without a job is left alone: its submit may still be storing it


def remove_directory(directory: str) -> None:
    """Remove a job's directory, however deep (see ``moi.jobfiles.by_descriptor.tree``); never follows a link out of it.

    OSError when something in it cannot be removed (or was moved while it was); a directory
    already gone is no error.
    """
    try:
        top = os.open(directory, DIRECTORY)
    except FileNotFoundError:
        return
    try:
        for fd, _, entries in tree(top, remove=True):
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):  # a link is removed, never followed
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(top)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(directory)


def remove_directories(job_ids: Iterable[str], infos: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Remove the directories of jobs that are gone (removed from the tree); ``infos``: what they were.

    One that cannot be removed now is logged and left to the sweeper, which removes gone jobs' directories.
    """
    for job_id in job_ids:
        if is_uuid(job_id):
            try:
                remove_directory(directory_of(job_id, (infos or {}).get(job_id)))
            except PathRefused:
                pass
            except OSError as error:
                log.warning("the files of removed job %s are left to the sweeper: %s", job_id, loops.one_line(error))


def sweep(store: Store, grace: float = SWEEP_GRACE) -> list[str]:
    """Remove the directories whose job is gone (expired, or removed behind moi's back); their ids.

    A directory younger than ``grace`` seconds is kept: its job may be being submitted.
    """
    root = process.settings().jobs_root
    try:
        names = [name for name in os.listdir(root) if is_uuid(name)]
    except FileNotFoundError:
        return []
    present = {info["id"] for info in store.get_many(names)}  # one round trip for the whole root
    gone = [name for name in names if name not in present and _older_than(os.path.join(root, name), grace)]
    swept = []
    for name in gone:
        try:  # one directory that cannot be removed must not keep the others
            remove_directory(os.path.join(root, name))
        except OSError as error:
            loops.failed(store, "sweeper", f"removing the files of gone job {name}", error, log)
        else:
            swept.append(name)
    return swept


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except FileNotFoundError:
        return False
