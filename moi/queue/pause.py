"""Pausing and resuming queued jobs: of a context, of a user, of a group, or one job.

A paused scope is a token in ``moi:paused`` (``context:<name>`` or ``group:<id>``;
a user is their group). Pausing marks each queued job in the scope ``Paused``
and moves its queue entry, score and all, to the context's held set, with the
same compare-and-set an engine uses to start a job, so a job is either taken or
held, never both. A job submitted into a paused scope is stored ``Paused`` at
once (``Queue.enqueue``). Resuming moves the entries back, in their old order,
unless another pause still covers them. Running jobs are never touched: they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from moi.core.errors import UnknownId, UnknownKey
from moi.core.info import Info, Status
from moi.storage.redis_errors import reaching
from moi.storage.store import Store


@dataclass(frozen=True)
class Scope:
    """What a pause acts on: ``kind`` is ``context``, ``group`` (a user is their group) or ``job``."""

    kind: str
    name: str

    @property
    def token(self) -> str:
        return f"{self.kind}:{self.name}"


def scope_tokens(context: str, chain: Iterable[str]) -> list[str]:
    """The tokens that would pause a job of ``context`` under the groups of ``chain``."""
    return [Scope("context", context).token, *(Scope("group", group).token for group in chain)]


def user_scope(store: Store, user: str) -> Scope:
    group_id = store.group_of_user(user)
    if group_id is None:
        raise UnknownKey(user)
    return Scope("group", group_id)


def pause(store: Store, scope: Scope) -> list[str]:
    """Pause a scope; the ids of the queued jobs it held."""
    if scope.kind != "job":
        with reaching(store.url):
            store.redis.sadd(store.keys.paused, scope.token)
    return [info["id"] for info in _jobs_of(store, scope, Status.QUEUED) if _hold(store, info)]


def resume(store: Store, scope: Scope) -> list[str]:
    """Resume a scope; the ids of the jobs queued again (those no other pause still covers)."""
    if scope.kind != "job":
        with reaching(store.url):
            store.redis.srem(store.keys.paused, scope.token)
    resumed = [info["id"] for info in _jobs_of(store, scope, Status.PAUSED) if _release(store, info)]
    for context in {str(info.get("context")) for info in store.get_many(resumed)}:
        wake(store, context, len(resumed))
    return resumed


def _jobs_of(store: Store, scope: Scope, status: str) -> list[Info]:
    if scope.kind == "job":
        jobs = [store.get(scope.name)]
    elif scope.kind == "group":
        if store.find(scope.name) is None:
            raise UnknownId(scope.name)
        jobs = store.descendant_jobs(scope.name)
    else:
        where = store.keys.queue(scope.name) if status == Status.QUEUED else store.keys.held(scope.name)
        with reaching(store.url):
            jobs = store.get_many(store.redis.zrange(where, 0, -1))
    return [info for info in jobs if info.get("type") == "job" and info.get("status") == status]


def _hold(store: Store, info: Info) -> bool:
    """Queued -> Paused, its entry moved to the held set; False if an engine took it first."""
    return _move(store, info, Status.QUEUED, Status.PAUSED, store.keys.queue, store.keys.held)


def _release(store: Store, info: Info) -> bool:
    """Paused -> Queued, its entry back in the queue; False while another pause covers it."""
    with reaching(store.url):
        tokens = scope_tokens(str(info.get("context")), store.chain_of(str(info.get("parent"))))
        if store.redis.smembers(store.keys.paused).intersection(tokens):
            return False
    return _move(store, info, Status.PAUSED, Status.QUEUED, store.keys.held, store.keys.queue)


def _move(
    store: Store, info: Info, before: str, after: str, source: Callable[[str], str], target: Callable[[str], str]
) -> bool:
    job_id, context = info["id"], str(info.get("context"))
    source_key, target_key = source(context), target(context)
    with reaching(store.url):
        score = store.redis.zscore(source_key, job_id)
    if score is None:
        return False  # taken (or moved) meanwhile
    moved: list[bool] = []

    def change(current: Info) -> Info | None:
        moved[:] = [current.get("status") == before]
        if not moved[0]:
            return None
        current["status"] = after
        return current

    also = [["ZREM", source_key, job_id], ["ZADD", target_key, repr(score), job_id]]
    try:
        store.update(job_id, change, info, also=also)
    except UnknownId:
        return False
    return moved == [True]


def wake(store: Store, context: str, jobs: int) -> None:
    """Tell dispatchers and waiting engines that jobs are back in a queue."""
    pipe = store.redis.pipeline(transaction=False)
    pipe.rpush(store.keys.wakeup(context), *["1"] * min(jobs, 64))
    pipe.ltrim(store.keys.wakeup(context), -64, -1)
    pipe.expire(store.keys.wakeup(context), 60)
    pipe.publish(store.keys.wake(context), str(jobs))
    with reaching(store.url):
        pipe.execute()
