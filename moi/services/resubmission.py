"""Acting on a service job after it was submitted: sending a failed one back to the start."""

from __future__ import annotations

from moi.core.errors import WrongState
from moi.core.info import Info, Status
from moi.core.lua import MAX_PRIORITY
from moi.core.values import is_whole
from moi.jobs import connections
from moi.queue.pause import wake
from moi.services.chain import remove_steps
from moi.storage.redis_errors import reaching
from moi.storage.store import Store


def resubmit(job_id: str, store: Store | None = None) -> Info:
    """A Failed service job queued again from the start, with its inputs (saliweb's resubmit).

    Its old steps are removed; it keeps its id, directory and place in the tree.
    WrongState for a job that is not a Failed service job.
    """
    store = store or connections.store()
    info = store.get(job_id)
    _check_resubmittable(job_id, info)
    context, priority, owner = str(info.get("context")), int(info.get("priority") or 0), str(info.get("owner") or "")
    last = store.keys.fair_last(context, owner, priority)
    with reaching(store.url):
        seq = int(store.redis.incr(store.keys.seq))
        clock, owners_last = store.redis.mget(store.keys.fair_clock(context, priority), last)
        steps = sorted(store.children(job_id))
    if steps:
        remove_steps(store, job_id, steps)
    # As ENQUEUE gives it (fair share: moi.core.lua): with the jobs being taken now at its priority, after its owner's.
    turn = max(_turn(clock, seq), _turn(owners_last, -1) + 1)
    score = (MAX_PRIORITY - priority) * 2**32 + turn

    also: list[list[str | int]] = [
        ["ZADD", store.keys.queue(context), score, job_id],
        ["ZREM", store.keys.due("expire"), job_id],
    ]
    if owner:
        also.append(["SADD", store.keys.active(owner), job_id])
        also.append(["SET", last, turn, "EX", store.ttl])
    new = store.update(job_id, _queued_again, info, also=also)
    if new.get("status") == Status.QUEUED:
        wake(store, context, 1)
        connections.dispatcher(connections.context_spec(context))
    return new


def _check_resubmittable(job_id: str, info: Info) -> None:
    """WrongState unless the job is a Failed service job."""
    if not info.get("service"):
        raise WrongState(job_id, "resubmitted", "it is not a service job; `moi relaunch` runs a job again")
    if info.get("status") != Status.FAILED:
        raise WrongState(job_id, "resubmitted", f"it is {info.get('status')}, and only a Failed job goes back")


def _queued_again(current: Info) -> Info | None:
    """The change that queues a Failed job again, its last run's outcome cleared; None if it is not Failed now."""
    if current.get("status") != Status.FAILED:
        return None  # resubmitted meanwhile
    for field in ("result", "result_format", "date_start", "date_end", "engine"):
        current[field] = None
    for field in ("retry_at", "attempts"):  # its retries start again from its first attempt
        current.pop(field, None)
    if "max_attempts" in current:
        current["attempt"] = 1
    current.update(status=Status.QUEUED, resubmitted=int(current.get("resubmitted") or 0) + 1)
    return current


def _turn(kept: str | None, absent: int) -> int:
    """A fair-share turn kept in Redis; one that is missing, or not a number, counts as ``absent``."""
    return int(kept) if kept is not None and is_whole(kept) else absent
