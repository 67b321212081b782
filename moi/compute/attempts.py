"""Attempts of a job on the engine side: whether a failed one gets another, and the guard on every write.

A job that carries ``attempt`` (it may retry, or is idempotent: see ``moi.core.policy``) is one attempt
at a time. As an attempt fails, ``retry_wanted`` decides (attempts left, ``retry_on`` matching, never a
cancel) and ``next_attempt_write`` makes the write that queues it again: ``Queued``, ``attempt`` + 1,
``retry_at``, this attempt kept in ``attempts``, and, in the same atomic step, the job in its context's
retry set (``moi.queue.retries``). That write is refused while the job's cancel flag is set (a cancel asked
as the attempt failed is not lost with the flag the write deletes), and the job is recorded Cancelled instead;
a retry that cannot be made of what the job's info holds (odd values written behind moi's back) is
recorded Failed instead, so the job never stays Running. Every write an engine makes of such a job goes
through ``guarded``: once the job belongs to another attempt (the watchdog queued it again after its engine
went silent), a late write of the old one changes nothing, and its engine says so once in its log.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import redis

from moi.core.errors import CommandFailed, JobCancelled, JobTimeLimit, RedisUnavailable
from moi.core.info import Info, is_finished
from moi.core.keys import Keys
from moi.core.lua_retry import BEAT, LET_GO
from moi.core.policy import attempts_left, delay_before, exception_names, next_attempt, retry_matches
from moi.queue.retries import retry_later
from moi.storage.redis_errors import reaching
from moi.storage.store import Change, Store

log = logging.getLogger("moi.engine")

_told: set[tuple[str, Any]] = set()  # (job, attempt) whose engine already said a newer attempt owns it


def retry_wanted(info: Info, cause: BaseException | None) -> bool:
    """Whether an attempt that failed with ``cause`` gets another (None: a failure no retry is for,
    such as a function the engine cannot load). A cancel never does; nor does a job whose cancel was asked
    for, which the retry's write itself checks (``next_attempt_write``)."""
    if cause is None or not attempts_left(info):
        return False
    if isinstance(cause, JobCancelled) and not isinstance(cause, JobTimeLimit):
        return False
    exit_code = cause.returncode if isinstance(cause, CommandFailed) else None
    return retry_matches(info, exception_names(cause), exit_code)


def cancel_asked(store: Store, job_id: str) -> bool:
    """Whether a cancel of the job was asked for (its flag is set): then it is not run again.
    Only a retry asks (one command); Redis away: not known, so no."""
    try:
        with reaching(store.url):
            return bool(store.redis.exists(store.keys.cancel(job_id)))
    except RedisUnavailable:
        return False


def next_attempt_write(
    keys: Keys, job_id: str, known: Info, ended: Info, ttl: int
) -> tuple[Change, list[list[str | int]]] | None:
    """The change that queues the job again after the attempt ``known`` holds, and the commands that go
    with it (its place in the retry set); write it with ``unless_key=keys.cancel(job_id)``. ``ended``: how
    the attempt ended (result, result_format, date_end); ``ttl``: how long Redis keeps the job's info, which
    its wait stays within. None (logged) when no retry can be made of what ``known`` holds."""
    try:
        return _next_attempt_write(keys, job_id, known, ended, longest_wait(ttl))
    except Exception as error:  # odd values written behind moi's back: the attempt fails as it is
        log.error("job %s: its next attempt cannot be queued (%s); it fails", job_id, error)
        return None


def longest_wait(ttl: int) -> float:
    """Seconds a job may wait for its next attempt, within the ``ttl`` its info is kept (the retry's write sets
    it anew), with a minute (or half of a short ttl) left for the promotion to come."""
    return max(ttl - 60.0, ttl / 2)


def _next_attempt_write(
    keys: Keys, job_id: str, known: Info, ended: Info, longest: float
) -> tuple[Change, list[list[str | int]]]:
    moment = time.time()
    retry_at = round(moment + delay_before(known, longest=longest), 3)  # decided once: the retry set's score too
    mine = known.get("attempt")

    def change(info: Info) -> Info | None:
        if is_finished(info) or info.get("attempt") != mine:
            return None
        info = next_attempt(info, ended, moment)
        info["retry_at"] = retry_at
        return info

    planned = {**known, "retry_at": retry_at}
    return change, retry_later(keys, job_id, planned)


def guarded(change: Change, job_id: str, attempt: Any) -> Change:
    """``change``, refused once the job belongs to another attempt than ``attempt`` (the one taken).
    A job without attempts (None) is not wrapped: a plain job's writes cost nothing more."""
    if attempt is None:
        return change

    def of_this_attempt(info: Info) -> Info | None:
        if info.get("attempt") != attempt:
            superseded(job_id, attempt, info.get("attempt"))
            return None
        return change(info)

    return of_this_attempt


def superseded(job_id: str, mine: Any, theirs: Any = None) -> None:
    """Say once that a newer attempt owns the job: this engine's outcome of ``mine`` is not recorded."""
    if (job_id, mine) in _told:
        return
    if len(_told) > 1000:
        _told.clear()
    _told.add((job_id, mine))
    now_owned = f"attempt {theirs}" if theirs is not None else "another engine's attempt"
    log.warning(
        "job %s: a newer attempt owns it now (%s); what attempt %s does here is not recorded", job_id, now_owned, mine
    )


# an engine's liveness keys, its own only ---------------------------------------------------------


@functools.lru_cache(maxsize=8)
def scripts(store: Store) -> tuple[Any, Any]:
    """The BEAT and LET_GO scripts (``moi.core.lua_retry``), registered once per store."""
    return store.redis.register_script(BEAT), store.redis.register_script(LET_GO)


def let_go(store: Store, label: str, ids: list[str]) -> None:
    """Drop the liveness keys of jobs whose final write was not this engine's, where they are still its own
    (best effort: a heartbeat left behind expires)."""
    keys = store.keys
    try:
        scripts(store)[1](
            keys=[keys.running, *(key for job_id in ids for key in (keys.heartbeat(job_id), keys.cancel(job_id)))],
            args=[label, *ids],
        )
    except redis.RedisError as error:
        log.warning("jobs %s: could not clear their heartbeats (%s); they expire soon", ids, error)
