"""A job's files wherever they are: here (``moi.jobfiles.reading``), or on the cluster of a scheduler context
reached over SSH (``moi.jobs.remote_files``), through the same calls. The HTTP routes, the websocket's log
follower and ``moi files`` / ``moi download`` read through here; ``fetch`` brings a cluster job's files home.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from moi.compute.schedulers.fetching import bring_home
from moi.core.errors import JobFilesError, UnknownId
from moi.core.info import Info, is_finished, is_uuid, now
from moi.jobfiles import reading
from moi.jobfiles.directory import directory_of
from moi.jobs import remote_files
from moi.jobs.remote_files import Place
from moi.storage import process

T = TypeVar("T")


def list(job_id: str, path: str = "", recursive: bool = True) -> builtins.list[reading.Entry]:  # noqa: A001
    """The entries under ``path`` of the job's directory, sorted by path (``moi.jobfiles.reading.list``)."""
    return list_at(place_of(job_id), job_id, path, recursive)


def open(job_id: str, path: str) -> BinaryIO:  # noqa: A001
    """A file of the job's directory, opened for reading (binary, seekable)."""
    return open_at(place_of(job_id), job_id, path)


def list_at(place: Place | None, job_id: str, path: str, recursive: bool) -> builtins.list[reading.Entry]:
    """``list``, the job's place known (``place_of``)."""
    if place is None:
        return reading.list(job_id, path, recursive)
    return remote_files.list(place, job_id, path, recursive)


def open_at(place: Place | None, job_id: str, path: str) -> BinaryIO:
    """``open``, the job's place known (``place_of``)."""
    if place is None:
        return reading.open(job_id, path)
    return remote_files.open(place, job_id, path)


async def work(place: Place | None, func: Callable[..., T], *args: Any, bounded: bool = True) -> T:
    """``func(*args)`` off the event loop: on its shared executor for files here, on the bounded pool of
    remote file work for files on a cluster (``remote_files.in_pool``), which a silent cluster may hold."""
    if place is None:
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)
    return await remote_files.in_pool(func, *args, bounded=bounded)


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


async def work_for(job_id: str, func: Callable[..., T], *args: Any) -> T:
    """``work``, the job's place looked up first (it changes once its files are brought home)."""
    place = await asyncio.get_running_loop().run_in_executor(None, place_of, job_id)
    return await work(place, func, *args)


def place_of(job_id: str) -> Place | None:
    """Where the job's files are: None for here (also for a job that is not there), else its cluster."""
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
