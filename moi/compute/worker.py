"""The engine side of moi's queue: take a job, run it, take the next, until the queue is empty.

A dispatcher (``moi.compute.dispatch``) sends ``work(spec)`` to an idle engine through
the cluster's controller; that small task is all the controller carries. The
engine then takes jobs from the context's queue in Redis one at a time, each
marked Running in the same atomic step that takes it (``Queue.take``), so a
long job never holds short ones behind it: each engine takes its next job only
when it is free. A batch's items come in blocks, sized by their pace (see
``moi.compute.batch_blocks``). When the queue is empty the engine waits up to ``LINGER``
seconds for a new job (woken by a token the submit pushed), then returns, so
the engine is free for other work on the cluster.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from moi.compute import batch_blocks, engine, heartbeats, running
from moi.compute.engine_roster import DoneCounter
from moi.core.errors import EngineRetiring, MoiError
from moi.core.redact import printable
from moi.queue.jobqueue import Queue, batch_of, unpack_call
from moi.storage.store import Store, store_for

log = logging.getLogger("moi.worker")

LINGER = 2.0  # seconds an engine with nothing to do waits for a new job before it returns
TAKE_BACKOFF = 5.0  # seconds an engine waits after a take that failed (Redis away, a script refused)


@dataclass(frozen=True)
class WorkSpec:
    """What an engine needs to work for moi: which Redis, and which context's queue."""

    context: str
    redis_url: str
    key_prefix: str
    ttl: int
    linger: float = LINGER

    def store(self) -> Store:
        return store_for(self.redis_url, self.key_prefix, self.ttl)


def work(spec: WorkSpec) -> int:
    """Run jobs from the context's queue until it stays empty for ``linger`` seconds; how many ran."""
    store = spec.store()
    queue = Queue(store)
    batches = batch_blocks.Batches(queue)
    label = engine.engine_label()
    counter = DoneCounter(store, spec.context, label)
    done = 0
    idle_until = time.monotonic() + spec.linger
    while True:
        most, batch = batches.block_size()
        try:
            taken = queue.take(spec.context, label, heartbeats.heartbeat_ttl(), most, batch)
        except EngineRetiring:  # wait out the linger (not on the wakeup tokens, which are the others'), then go
            counter.flush()
            time.sleep(spec.linger)
            return done
        except (MoiError, ValueError) as error:  # Redis away or refusing the take: back off, never spin
            _take_failed(spec.context, error)
            return done
        if taken:
            if batch_of(taken[0].call) is None:
                _run(store, taken[0].info, taken[0].call)
            else:
                batch_blocks.run(store, queue, spec.context, taken, batches)
            done += len(taken)
            counter.add(len(taken))
            idle_until = time.monotonic() + spec.linger
            continue
        left = idle_until - time.monotonic()
        if left <= 0:
            counter.flush()
            return done
        queue.wait_for_work(spec.context, left)


_last_take_problem = ""  # logged once while it lasts, not once a take


def _take_failed(context: str, error: Exception) -> None:
    """A take that failed: said once in the engine's log, then a pause before the dispatcher's next work task
    (it sends one at once when a task returns: without the pause, an engine would retry as fast as it fails)."""
    global _last_take_problem
    text = printable(str(error))
    if text != _last_take_problem:
        log.warning("engine cannot take jobs of %s (%s); trying again every %gs", context, text, TAKE_BACKOFF)
    _last_take_problem = text
    time.sleep(TAKE_BACKOFF)


def _run(store: Store, info: dict[str, Any], call: str) -> None:
    """One job, already Running: its function called, its outcome recorded. Never raises for the job's error."""
    liveness = engine.Liveness(store, info["id"], info)  # its attempt and time limits come with it
    try:
        func, args, kwargs, origin = unpack_call(call)
    except Exception as error:  # a call this engine cannot load (a module it lacks) fails that job alone
        running.fail_unloadable(store, liveness, info, error)
        return
    with contextlib.suppress(Exception):  # recorded by run_started: Failed with its traceback, or Cancelled
        running.run_started(store, liveness, info, origin, func, args, kwargs)
