"""Cancelling jobs (one, or every unfinished job under a group), and deleting a job's files.

A queued job is marked Cancelled in the same atomic write that takes it out of its queue (or its retry
set, while it waits for its next attempt), so no engine can start it; a running job's engine is asked,
through its cancel flag, to interrupt it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from moi.core.errors import (
    BadDocument,
    FilesNotRemoved,
    NoSuchFile,
    UnknownId,
)
from moi.core.info import Info, Status, is_finished, now
from moi.jobfiles.directory import directory_of
from moi.jobfiles.removal import remove_directory
from moi.jobs import connections
from moi.queue.job_handle import JobHandle
from moi.queue.retries import leave_retry
from moi.storage.redis_errors import reaching
from moi.storage.store import Store, set_fields

log = logging.getLogger("moi.job")


@dataclass
class CancelReport:
    """What ``cancel`` did, job by job."""

    cancelled: list[str] = field(default_factory=list)  # were queued: Cancelled now, never run
    requested: list[str] = field(default_factory=list)  # running: their engine interrupts them
    finished: list[str] = field(default_factory=list)  # already finished: nothing changed
    bad: list[BadDocument] = field(default_factory=list)  # keys under the group that hold no info object

    def summary(self, node_id: str) -> str:
        """One line for a user."""
        if not (self.cancelled or self.requested):
            if len(self.finished) == 1 and self.finished[0] == node_id:
                return f"Job {node_id} has already finished; nothing to cancel"
            if not self.finished:
                return f"Nothing to cancel in {node_id}: it holds no jobs"
            return f"Nothing to cancel in {node_id}: all {len(self.finished)} jobs have finished"
        parts = []
        if self.cancelled:
            parts.append(f"{len(self.cancelled)} queued job(s) cancelled")
        if self.requested:
            parts.append(f"{len(self.requested)} running job(s) being interrupted")
        if self.finished:
            parts.append(f"{len(self.finished)} already finished")
        return f"Cancel {node_id}: " + ", ".join(parts)


def cancel(node_id: str, store: Store | None = None) -> CancelReport:
    """Cancel a job, or every unfinished job under a group.

    A queued job is marked Cancelled at once and never runs; a running job's
    engine interrupts it (a shell command's process group is terminated) and
    records Cancelled within a few seconds. Finished jobs are left as they are.
    Raises UnknownId for an id that names nothing.
    """
    store = store or connections.store()
    info = store.get(node_id)
    report = CancelReport()
    jobs = store.descendant_jobs(node_id, report.bad) if info.get("type") == "group" else [info]
    for job in jobs:
        _cancel_job(store, job, report)
    return report


def _cancel_job(store: Store, info: Info, report: CancelReport) -> None:
    job_id = info["id"]
    wrote: list[bool] = []

    def change(current: Info) -> Info | None:
        new = _cancel_if_queued(current)
        wrote[:] = [new is not None]  # the last attempt is the one that counted
        return new

    try:
        # Out of its queue (or held set) in the same atomic write: no engine can take it. A queued job
        # an engine has taken already (a batch item it is about to start) is asked of that engine instead.
        context = str(info.get("context"))
        leave = [
            ["ZREM", store.keys.queue(context), job_id],
            ["ZREM", store.keys.held(context), job_id],
            *leave_retry(store.keys, job_id, info),  # a job waiting for its next attempt
        ]
        info = store.update(job_id, change, info, also=leave, unless_in=store.keys.running)
    except UnknownId:
        return  # removed meanwhile: nothing left to cancel
    if wrote == [True] and info["status"] == Status.CANCELLED:
        report.cancelled.append(job_id)
    elif is_finished(info):
        report.finished.append(job_id)
    else:
        with reaching(store.url):
            store.redis.set(store.keys.cancel(job_id), "1", ex=store.ttl)
        report.requested.append(job_id)


_CANCELLED_QUEUED = "Cancelled before it started"


def _cancel_if_queued(info: Info) -> Info | None:
    # The compare-and-set decides the race with an engine starting the job:
    # whichever writes first wins, and run_job never runs a job not Queued.
    if info["status"] not in (Status.QUEUED, Status.PAUSED):
        return None
    info.update(status=Status.CANCELLED, result=_CANCELLED_QUEUED, result_format="text", date_end=now())
    return info


CANCEL_WAIT = 30.0  # seconds ``delete`` waits for a cancelled job to end before removing its directory


def delete(job_id: str) -> None:
    """Remove a job's directory; its info object stays, marked ``files: "deleted"``.

    A job that has not finished is cancelled first (and waited for, at most
    CANCEL_WAIT seconds), so it does not write into a directory being removed.
    """
    store = connections.store()
    info = store.get(job_id)
    directory = directory_of(job_id, info)
    if not os.path.isdir(directory) and info.get("files") != "deleted":
        raise NoSuchFile(job_id, "")
    if not is_finished(info):
        cancel(job_id, store)
        JobHandle(job_id, store).wait(CANCEL_WAIT)
    try:
        remove_directory(directory)
    except OSError as error:  # a file the OS refuses to remove (immutable, a mount): one line, not a traceback
        raise FilesNotRemoved(job_id, error) from None
    store.update(job_id, set_fields(files="deleted"))
