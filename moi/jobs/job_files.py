"""A job's files wherever they are: here (``moi.jobfiles.reading``), or on the cluster of a scheduler context
reached over SSH (``moi.jobs.remote_files``), through the same calls. The HTTP routes, the websocket's log
follower and ``moi files`` / ``moi download`` read through here; ``fetch`` brings a cluster job's files home.
"""

from __future__ import annotations

import builtins
from typing import BinaryIO

from moi.compute.schedulers.fetching import bring_home
from moi.core.errors import JobFilesError, UnknownId
from moi.core.info import Info, is_finished, is_uuid, now
from moi.jobfiles import reading
from moi.jobfiles.directory import directory_of
from moi.jobs import remote_files
from moi.storage import process


def list(job_id: str, path: str = "", recursive: bool = True) -> builtins.list[reading.Entry]:  # noqa: A001
    """The entries under ``path`` of the job's directory, sorted by path (``moi.jobfiles.reading.list``)."""
    place = _place(job_id)
    if place is None:
        return reading.list(job_id, path, recursive)
    return remote_files.list(place, job_id, path, recursive)


def open(job_id: str, path: str) -> BinaryIO:  # noqa: A001
    """A file of the job's directory, opened for reading (binary, seekable)."""
    place = _place(job_id)
    if place is None:
        return reading.open(job_id, path)
    return remote_files.open(place, job_id, path)


def fetch(job_id: str) -> int:
    """A cluster job's files brought home into its job directory here; how many. Once the job has ended and
    its files are home, they are read here."""
    info = _info(job_id)
    place = remote_files.place_of(info) if info is not None else None
    if info is None or place is None:
        raise JobFilesError(f"Job {job_id} has no files on a cluster: `moi files --job-id {job_id}` lists them here")
    count = bring_home(place.runner, place.directory, directory_of(job_id, info), job_id)

    def mark(current: Info) -> Info | None:
        if not is_finished(current):  # still running there: what it writes next is read there
            return None
        current["scheduler"] = {**current.get("scheduler", {}), "fetched": now()}
        return current

    process.store().update(job_id, mark, info)
    return count


def _place(job_id: str) -> remote_files.Place | None:
    info = _info(job_id)
    return remote_files.place_of(info) if info is not None else None


def _info(job_id: str) -> Info | None:
    """The job's info object; None for a job that is not there (the local read then says there are no files)."""
    if not is_uuid(job_id):
        return None
    try:
        return process.store().get(job_id)
    except UnknownId:
        return None
