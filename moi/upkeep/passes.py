"""The watchdog's pass, as every long-lived moi process runs it (the runtime's supervisor, ``moi server``,
``moi watchdog``): engines lost (``moi.compute.watchdog``), then the upkeep that rides on it.

Every pass: jobs whose engine died are failed (or queued again, when idempotent), the jobs of every
context due for their next attempt go back into their queue, retention moves service jobs on (and the mail
sender is started when mail is configured), and this process's dead dispatcher threads start again.
Every ``SWEEP_EVERY`` passes: gone jobs' directories are removed and the listing indexes pruned.
No item's failure, nor a Redis outage, ends the loop: each is logged and counted (``moi.storage.loops``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from moi.compute import dispatch
from moi.compute.watchdog import INTERVAL, Watchdog
from moi.core.errors import RedisUnavailable
from moi.core.redact import printable
from moi.jobfiles import removal
from moi.queue import listing
from moi.queue.retries import Retries
from moi.services import mail, sweeper
from moi.storage import loops
from moi.storage.store import Store

log = logging.getLogger("moi.watchdog")

SWEEP_EVERY = 30  # passes between two sweeps of the job directories (one a minute)


def run_forever(store: Store, stop: threading.Event, interval: float = INTERVAL) -> None:
    """Check every ``interval`` seconds until ``stop`` is set; Redis outages are logged, not fatal."""
    watchdog = Watchdog(store)
    while not stop.is_set():
        check_logging(watchdog)
        stop.wait(interval)


async def watch(store: Store, stop: asyncio.Event, interval: float = INTERVAL) -> None:
    """``run_forever`` for an asyncio program (the runtime supervisor, ``moi server``)."""
    watchdog = Watchdog(store)
    while not stop.is_set():
        try:
            await asyncio.to_thread(check_logging, watchdog)
        except Exception as error:  # check_logging catches everything: the pass could not even start
            loops.failed(store, "watchdog", "a pass (not started)", error, log)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def check_logging(watchdog: Watchdog) -> list[str]:
    """One pass of everything a watchdog runs; never raises (short of a BaseException): its loop must go on."""
    store, failed = watchdog.store, []
    try:
        failed = watchdog.check()
        watchdog.passes += 1
        if watchdog.passes % SWEEP_EVERY == 1:
            sweep_logging(store)
            with loops.item(store, "sweeper", "pruning the listing indexes", log):
                listing.prune(store)
        retries_logging(store)
        retention_logging(store)
        _revive_threads(store)
    except RedisUnavailable as error:
        log.warning("watchdog pass skipped: %s", error)
    except Exception as error:  # what no item's guard caught: counted, and the next pass comes as usual
        loops.failed(store, "watchdog", "a pass", error, log)
    return failed


def _revive_threads(store: Store) -> None:
    """This process's dispatcher threads that died, started again (the mail sender is, by ``retention_logging``)."""
    dispatch.revive_all()


def retries_logging(store: Store) -> int:
    """Jobs of every context due for their next attempt moved into their queue (one round trip when none
    is due: the leading dispatcher of a context does the same each tick); how many went. Should that call
    fail (a script Redis refused, say), each context is tried alone: one context's trouble stops no other."""
    retries = Retries(store)
    try:
        moved = retries.promote()
    except RedisUnavailable as error:
        log.warning("due retries not queued: %s", error)
        return 0
    except Exception:
        moved = _promote_each(store, retries)
    if moved:
        log.info("%d job(s) due for their next attempt queued again", moved)
    return moved


def _promote_each(store: Store, retries: Retries) -> int:
    """``promote`` for one context at a time, each failure counted (the next pass tries again); how many went."""
    moved = 0
    try:
        contexts = retries.contexts()
    except RedisUnavailable as error:
        log.warning("due retries not queued: %s", error)
        return 0
    for context in contexts:
        with loops.item(store, "watchdog", f"queueing due retries of {printable(context)}", log):
            moved += retries.promote([context])
    return moved


def retention_logging(store: Store) -> list[str]:
    """Service jobs due for archiving or expiring moved on (one round trip when none is due);
    the process's mail sender started when mail is configured. Never raises for a service's mistake."""
    mail.start_sender(store)
    try:
        moved = sweeper.sweep(store)
    except RedisUnavailable as error:
        log.warning("retention pass skipped: %s", error)
        return []
    except Exception as error:  # each job's move is guarded: this is the pass's own failure
        loops.failed(store, "sweeper", "a retention pass", error, log)
        return []
    for job_id in moved:
        log.info("retention moved service job %s", job_id)
    return moved


def sweep_logging(store: Store) -> list[str]:
    """Remove the directories of jobs that are gone (expired); logs each, never raises for a disk error."""
    try:
        swept = removal.sweep(store)  # each directory's failure is counted there
    except RedisUnavailable as error:
        log.warning("job directories not swept: %s", error)
        return []
    except Exception as error:  # the jobs root itself cannot be read, say
        loops.failed(store, "sweeper", "sweeping the job directories", error, log)
        return []
    for job_id in swept:
        log.info("removed the files of job %s: the job is gone (expired or removed)", job_id)
    return swept
