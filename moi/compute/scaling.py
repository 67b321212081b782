"""Adding and removing engines of the embedded cluster while it runs (the operations page).

An admin asks for one engine more or fewer (``POST /api/v1/contexts/<ctx>/engines/add``
or ``/remove``), which sets how many the cluster should have (``moi:engines:wanted``,
kept across restarts). The runtime's supervisor looks once a second: with fewer engines
it starts some; with more, it retires an idle one. A retiring engine's label goes into
``moi:engines:retiring``, so the queue gives it no more jobs (TAKE refuses it); once no
job runs on it, it is stopped. A removal never cuts a job short.
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


def wanted(store: Store, configured: int) -> int:
    """How many engines the embedded cluster should have: as last asked for, else as configured."""
    with reaching(store.url):
        text = store.redis.get(store.keys.engines_wanted)
    return int(text) if text and text.isdigit() else configured


def change(store: Store, by: int, current: int) -> int:
    """One step up or down from what is wanted now (``current`` if nobody asked yet); the new count.

    EngineCountRefused, and nothing changed, past ``MIN_ENGINES`` or ``MAX_ENGINES``.
    """
    key = store.keys.engines_wanted
    with reaching(store.url):
        store.redis.set(key, current, nx=True)
        count = int(store.redis.incrby(key, by))
        if MIN_ENGINES <= count <= MAX_ENGINES:
            return count
        store.redis.incrby(key, -by)
    raise EngineCountRefused(
        f"the embedded cluster keeps from {MIN_ENGINES} to {MAX_ENGINES} engines, and {count - by} are wanted now"
    )


def busy_labels(store: Store) -> set[str]:
    """The engines (``host:pid``) some job is on now: the heartbeats of the running jobs name them."""
    with reaching(store.url):
        running = sorted(store.redis.smembers(store.keys.running))
        labels = store.redis.mget([store.keys.heartbeat(job_id) for job_id in running]) if running else []
    return {label for label in labels if label}


async def settle(cluster: Any, store: Store | None, configured: int) -> None:
    """The supervisor's look: engines that died replaced, and the count brought to what is wanted."""
    for set_id, engine_set in list(cluster.engines.items()):
        if not getattr(engine_set, "launchers", None):
            cluster.engines.pop(set_id)  # every engine of this set is gone
    launchers = {
        f"{socket.gethostname()}:{launcher.pid}": launcher
        for engine_set in cluster.engines.values()
        for launcher in engine_set.launchers.values()
    }
    target, retiring = configured, set()
    if store is not None:
        try:
            target = wanted(store, configured)
            retiring = await _retire(store, launchers, target)
        except (MoiError, redis.RedisError) as error:  # Redis away: keep the cluster's size, retire nobody
            log.debug("engines kept as they are: %s", error)
    staying = len(launchers) - len(retiring)
    if staying < target:
        log.warning("%d engine(s) wanted, %d running; starting %d", target, staying, target - staying)
        await cluster.start_engines(n=target - staying)


async def _retire(store: Store, launchers: dict[str, Any], target: int) -> set[str]:
    """Mark idle engines beyond ``target`` retiring; stop those no job runs on. The labels still retiring."""
    key = store.keys.engines_retiring
    with reaching(store.url):
        marked = set(store.redis.smembers(key))
        if marked - launchers.keys():  # engines gone some other way (died, a runtime restarted)
            store.redis.srem(key, *(marked - launchers.keys()))
    retiring = marked & launchers.keys()
    busy = busy_labels(store)
    staying = [label for label in launchers if label not in retiring]
    surplus = len(staying) - target
    if surplus > 0:
        chosen = sorted(staying, key=lambda label: label in busy)[:surplus]  # idle ones first
        with reaching(store.url):
            store.redis.sadd(key, *chosen)
        retiring |= set(chosen)
        busy = busy_labels(store)  # again, now that they take nothing: a job taken meanwhile is seen
    elif surplus < 0 and retiring:
        kept = sorted(retiring)[:-surplus]  # more wanted again: the retiring ones stay after all
        with reaching(store.url):
            store.redis.srem(key, *kept)
        retiring -= set(kept)
    for label in sorted(retiring - busy):
        log.warning("stopping engine %s: fewer engines wanted", label)
        with contextlib.suppress(Exception):
            await launchers[label].stop()
        with reaching(store.url):
            store.redis.srem(key, label)
        retiring.discard(label)
    return retiring
