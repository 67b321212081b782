"""Job files: a directory per job, and where it is.

A job submitted with ``files=`` (or ``workdir=True``) gets ``<jobs root>/<job id>/``
(``MOI_JOBS_DIR`` / ``[moi] jobs_dir``; by default ``<state dir>/jobs``) holding
``input/`` (the inputs, copied in before the job is queued), ``output/`` and
``tmp/``. The job runs in it, with ``$INPUT``, ``$OUTPUT``, ``$TEMP`` and ``$CPU``
set; a Python job gets its path as ``workdir``. Anything written under the
directory is the job's output; its info object keeps a ``files`` summary (count
and total size), never the list.

The rest of a directory's life, each in its module of ``moi.jobfiles``: ``inputs`` makes it
and places the inputs at submit time, ``on_engine`` brings in what is fetched, sets the
job's environment and sends ``output/`` out, ``reading`` lists and opens its files (confined
to it), and ``removal`` removes it, or sweeps it once its job is gone.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from moi.core.errors import InvalidId, PathRefused, UnknownId
from moi.core.info import is_uuid
from moi.storage import process

INPUT, OUTPUT, TEMP, RESOURCE = "input", "output", "tmp", "resource"


def directory_of(job_id: str, info: Mapping[str, Any] | None = None) -> str:
    """Where a job's directory is, whether or not it exists: ``<jobs root>/<id>``, or where
    ``info`` says it moved to (a service's per-state roots, see ``moi.services.state_directories``)."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    moved = info.get("directory") if info is not None else None
    if isinstance(moved, str) and moved:
        return _checked_move(job_id, moved)
    return os.path.join(process.settings().jobs_root, job_id)


def current_directory(job_id: str) -> str:
    """``directory_of`` the job as its info object now says (one read)."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    try:
        info = process.store().get(job_id)
    except UnknownId:  # gone: it has no files either, which the open that follows says
        return directory_of(job_id)
    return directory_of(job_id, info)


def _checked_move(job_id: str, path: str) -> str:
    """A moved directory as an info object names it, trusted only as moi makes one: an absolute
    normal path ending in the job's id, a real directory (no link), owned by this user."""
    if os.path.isabs(path) and os.path.normpath(path) == path and os.path.basename(path) == job_id:
        try:
            held = os.lstat(path)
        except OSError:
            return path  # gone (removed, or on a host that does not see it): reading it finds nothing
        if stat.S_ISDIR(held.st_mode) and held.st_uid == os.getuid():
            return path
    raise PathRefused(job_id, path, "its info names a directory moi did not make for it")
