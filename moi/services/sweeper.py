"""Retention: finished service jobs archived after ``archive_after``, expired after ``expire_after``.

The due indexes (``moi:due:archive``, ``moi:due:expire``, sorted by due time; see
``moi.storage.retention``) say what is due, so a pass with nothing due is one round trip
however many jobs are kept. Any number of sweepers may run (the runtime,
``moi server``, ``moi watchdog``): each move is a compare-and-set, and only the
sweeper whose write landed does what goes with it.

A move never loads the job's service: everything it needs is in the job's info (its durations,
its per-state directories, and which retention hooks its service defines, recorded at submit).
So a service this process cannot import (a user's own ``mymodule``, beside the script that
submitted it) is archived and expired all the same. A hook runs where the job's other hooks
ran: the sweeper queues it as a hook job, a child of the service job, on an engine of its context,
in the job's directory (``moi.services.retention_hooks``).

- Success -> Archived: the directory moves to the service's archived root, if it names one
  (here), then ``archive()`` is queued; an archived job's files are no longer served.
- Archived (or Failed, Cancelled) -> Expired: ``expire()`` is queued, and its hook job removes
  the job's directory after it; without the hook the directory is removed here. The info
  object is kept ``keep_expired`` seconds more.
- A hook that fails, or a service that cannot be loaded on the engine, is noted on the job
  (``hook_errors``) and, for the latter, among the unloadable services (``moi status``, the
  operations page, ``/metrics``); the move stands, and nothing waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from moi.core.errors import MoiError, MoveFailed, RedisUnavailable
from moi.core.info import Info, Status, now
from moi.core.redact import printable
from moi.jobfiles import directory
from moi.jobfiles.removal import remove_directory
from moi.services import state_directories
from moi.services.retention_hooks import has_hook, note, queue_hook
from moi.storage import loops
from moi.storage.redis_errors import reaching
from moi.storage.store import Store, set_fields

log = logging.getLogger("moi.services.sweeper")

BATCH = 200  # jobs moved per step and pass at most: a backlog is worked off over passes
POSTPONE = 3600.0  # seconds a job this sweeper could not move (its document is not moi's) waits to be looked at again


def sweep(store: Store, moment: float | None = None, batch: int = BATCH) -> list[str]:
    """One pass: every job due is moved on; the ids this sweeper moved."""
    moment = time.time() if moment is None else moment
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    for step in ("archive", "expire"):
        pipe.zrangebyscore(keys.due(step), "-inf", moment, start=0, num=batch)
    with reaching(store.url):
        due_archive, due_expire = pipe.execute()
    moved = _each(store, "archive", due_archive, _archive)
    return moved + _each(store, "expire", due_expire, _expire)


def _each(store: Store, step: str, ids: list[str], move: Callable[[Store, Info], bool]) -> list[str]:
    if not ids:
        return []
    infos = {info["id"]: info for info in store.get_many(ids)}
    gone = [job_id for job_id in ids if job_id not in infos]
    moved = []
    for job_id, info in infos.items():
        try:
            if move(store, info):
                moved.append(job_id)
        except RedisUnavailable:
            raise
        except MoiError as error:
            log.warning("job %s: %s skipped: %s", job_id, step, error)
        except Exception as error:  # a document moi cannot move (written behind its back): it alone waits
            loops.failed(store, "sweeper", f"job {printable(job_id)}: {step}", error, log)
            _postpone(store, step, job_id)
    if gone:  # removed or expired by Redis meanwhile: nothing left to move
        with reaching(store.url):
            store.redis.zrem(store.keys.due(step), *gone)
    return moved


def _postpone(store: Store, step: str, job_id: str) -> None:
    """Look at a job again for ``step`` only after ``POSTPONE`` seconds."""
    with reaching(store.url):
        store.redis.zadd(store.keys.due(step), {job_id: time.time() + POSTPONE}, xx=True)


def _moved(store: Store, info: Info, before: tuple[str, ...], after: Status, ttl: int | None = None) -> Info | None:
    """The compare-and-set of one retention move; the info it wrote, or None when another write won."""
    won: list[bool] = []

    def change(current: Info) -> Info | None:
        won[:] = [current.get("status") in before]
        if not won[0]:
            return None
        current.update(status=after, **{f"date_{after.lower()}": now()})
        if ttl is not None:
            current["ttl"] = ttl
        return current

    new = store.update(info["id"], change, info)
    if won != [True]:  # moved by another sweeper, or resubmitted: this entry is stale
        with reaching(store.url):
            store.redis.zrem(store.keys.due("archive" if after == Status.ARCHIVED else "expire"), info["id"])
        return None
    return new


def _archive(store: Store, info: Info) -> bool:
    new = _moved(store, info, (Status.SUCCESS,), Status.ARCHIVED)
    if new is None:
        return False
    try:  # to the archived root, when the service names one (slower storage, say)
        here = state_directories.move_for(store, new, Status.ARCHIVED, directory.directory_of(new["id"], new))
    except MoveFailed as error:
        store.update(
            new["id"], set_fields(status=Status.FAILED, result=f"Archiving failed: {error}", result_format="text")
        )
        return False
    if has_hook(new, "archive"):
        _hooked(store, new, "archive", here)
    return True


def _expire(store: Store, info: Info) -> bool:
    keep = int((info.get("retention") or {}).get("keep_expired") or store.ttl)
    finished = (Status.ARCHIVED, Status.FAILED, Status.CANCELLED)
    new = _moved(store, info, finished, Status.EXPIRED, ttl=max(1, keep))
    if new is None:
        return False
    here = directory.directory_of(new["id"], new)
    if not (has_hook(new, "expire") and _hooked(store, new, "expire", here)):
        remove_directory(here)  # else its hook job removes it, once the hook has run
    return True


def _hooked(store: Store, info: Info, hook: str, here: str) -> bool:
    """Whether ``hook`` of a job this sweeper just moved is queued; why not is noted on the job."""
    try:
        return queue_hook(store, info, hook, here) is not None
    except RedisUnavailable:
        raise
    except Exception as error:  # its call cannot be read, say: the move stands, the hook is noted as not run
        loops.failed(store, "sweeper", f"job {printable(info['id'])}: queueing {hook}()", error, log)
        note(store, info["id"], hook, f"{hook}() not run: it could not be queued: {loops.one_line(error)}")
        return False
