"""Adding and removing engines of a context while it runs (the operations page).

An admin asks for one engine more or fewer (``POST /api/v1/contexts/<ctx>/engines/add``
or ``/remove``), which sets how many the context should have (``moi:engines:wanted:<ctx>``).
For the embedded cluster the runtime's supervisor looks once a second (``settle``): with fewer
engines it starts some; with more, it retires an idle one. A cluster an operator started
(``ipcluster``: local, SSH or Slurm engines) is ``moi.compute.launched``'s, on the same protocol.
A retiring engine's label goes into ``moi:engines:retiring:<ctx>``, so the queue gives it no more
jobs (TAKE refuses it); once no job runs on it, it is stopped. A removal never cuts a job short.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import redis

from moi.core.errors import EngineCountRefused, MoiError
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.scaling")

MAX_ENGINES = 64
MIN_ENGINES = 1


def wanted(store: Store, context: str, configured: int | None) -> int | None:
    """How many engines a context should have: as last asked for, else ``configured``."""
    with reaching(store.url):
        text = store.redis.get(store.keys.engines_wanted(context))
    return int(text) if text and text.isdigit() else configured


def change(store: Store, context: str, by: int, current: int) -> int:
    """One step up or down from what is wanted now (``current`` if nobody asked yet); the new count.

    EngineCountRefused, and nothing changed, past ``MIN_ENGINES`` or ``MAX_ENGINES``.
    """
    key = store.keys.engines_wanted(context)
    with reaching(store.url):
        store.redis.set(key, current, nx=True)
        count = int(store.redis.incrby(key, by))
        if MIN_ENGINES <= count <= MAX_ENGINES:
            return count
        store.redis.incrby(key, -by)
    raise EngineCountRefused(
        f"context {context!r} keeps from {MIN_ENGINES} to {MAX_ENGINES} engines, and {count - by} are wanted now"
    )


def busy_labels(store: Store) -> set[str]:
    """The engines (``host:pid``) some job is on now: the heartbeats of the running jobs name them."""
    with reaching(store.url):
        running = sorted(store.redis.smembers(store.keys.running))
        labels = store.redis.mget([store.keys.heartbeat(job_id) for job_id in running]) if running else []
    return {label for label in labels if label}


async def settle(cluster: Any, store: Store | None, context: str, configured: int) -> None:
    """The supervisor's look at the embedded cluster: engines that died replaced, and the count brought to
    what is wanted."""
    for set_id, engine_set in list(cluster.engines.items()):
        if not getattr(engine_set, "launchers", None):
            cluster.engines.pop(set_id)  # every engine of this set is gone
    launchers = {
        f"{socket.gethostname()}:{launcher.pid}": launcher
        for engine_set in cluster.engines.values()
        for launcher in engine_set.launchers.values()
    }
    target, retiring = configured, set[str]()
    if store is not None:
        try:
            target = wanted(store, context, configured) or configured
            retiring, idle = plan(store, context, set(launchers), target)
            retiring -= await _stop(store, context, launchers, idle)
        except (MoiError, redis.RedisError) as error:  # Redis away: keep the cluster's size, retire nobody
            log.debug("engines kept as they are: %s", error)
    staying = len(launchers) - len(retiring)
    if staying < target:
        log.warning("%d engine(s) wanted, %d running; starting %d", target, staying, target - staying)
        await cluster.start_engines(n=target - staying)


async def _stop(store: Store, context: str, launchers: dict[str, Any], labels: list[str]) -> set[str]:
    """Stop these engines through their launchers; the labels stopped."""
    for label in labels:
        log.warning("stopping engine %s: fewer engines wanted", label)
        with contextlib.suppress(Exception):
            await launchers[label].stop()
        with reaching(store.url):
            store.redis.srem(store.keys.engines_retiring(context), label)
    return set(labels)


def plan(store: Store, context: str, labels: set[str], target: int) -> tuple[set[str], list[str]]:
    """Mark idle engines beyond ``target`` retiring (more wanted again: retiring ones stay after all).

    ``labels``: the context's engines now. Answers the labels retiring, and those of them no job runs
    on, to stop now.
    """
    key = store.keys.engines_retiring(context)
    with reaching(store.url):
        marked = set(store.redis.smembers(key))
        if marked - labels:  # engines gone some other way (died, stopped, a runtime restarted)
            store.redis.srem(key, *(marked - labels))
    retiring = marked & labels
    busy = busy_labels(store)
    staying = [label for label in labels if label not in retiring]
    surplus = len(staying) - target
    if surplus > 0:
        chosen = sorted(staying, key=lambda label: label in busy)[:surplus]  # idle ones first
        with reaching(store.url):
            store.redis.sadd(key, *chosen)
        retiring |= set(chosen)
        busy = busy_labels(store)  # again, now that they take nothing: a job taken meanwhile is seen
    elif surplus < 0 and retiring:
        kept = sorted(retiring)[:-surplus]
        with reaching(store.url):
            store.redis.srem(key, *kept)
        retiring -= set(kept)
    return retiring, sorted(retiring - busy)
