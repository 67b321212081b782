"""Dispatchers: start moi's work on the idle engines of a context while its queue holds jobs.

Any number of processes may run a dispatcher for a context (every submitting
process, ``moi server``, ``moi watchdog``, the embedded runtime's supervisor);
one of them leads at a time, through a lease in Redis, and the others stand by
to take over within ``LEASE`` seconds if it goes. The leader wakes on the
queue's announcements (a submit publishes on ``moi:wake:<ctx>``) and when one
of its work tasks returns, not by polling the queue; every ``TICK`` seconds it
also renews its lease, moves the context's jobs due for their next attempt into
its queue (``moi.queue.retries``), notes the cluster online, and checks that the
controller is still the one it is connected to (a restarted controller has a
new key and has forgotten every task: it reconnects and starts again). For a cluster
the operator started, it also retires engines the operations page removed
(``moi.compute.launched``).

A cluster that is down or not started yet is simply offline: jobs wait in the
queue, and run once it is reachable.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Protocol

import redis

from moi.compute import launched
from moi.compute.context import ByName, Context
from moi.compute.engine_roster import Roll
from moi.compute.lease import LEASE, Lease
from moi.compute.schedulers.poller import SchedulerPoller
from moi.compute.waking import WakeChannel
from moi.compute.watchdog import controller_alive
from moi.compute.worker import WorkSpec, work
from moi.core.config import ContextSpec
from moi.core.errors import ClusterUnavailable, MoiError
from moi.core.redact import printable
from moi.queue.jobqueue import Queue
from moi.queue.retries import Retries
from moi.storage import loops
from moi.storage.store import Store

log = logging.getLogger("moi.dispatch")

TICK = 2.0  # seconds between lease renewals and controller checks
RETRY_OFFLINE = 2.0  # seconds between attempts to reach a cluster that is offline
DELIVER_AT_EXIT = 30.0  # seconds a submitter that is exiting waits for the controller to hold its work


class Dispatcher:
    """Keeps one work task on each idle engine of a context while its queue is not empty."""

    def __init__(self, store: Store, spec: ContextSpec, timeout: float = 10.0, scales: bool = False) -> None:
        self.store = store
        self.name = spec.name
        self.scales = scales  # retires engines removed on the ops page (not the embedded cluster's: its supervisor)
        self.queue = Queue(store)
        self._retries = Retries(store)
        self.context = Context(spec, timeout)  # its own connection: nobody else resets it
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = Lease(store, store.keys.dispatcher(spec.name), self.me)
        self.work_spec = WorkSpec(spec.name, store.url, store.keys.prefix, store.ttl)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._outstanding: dict[int, Any] = {}  # engine id -> the AsyncResult of its work task
        self._roll = Roll(store, spec.name)  # who each engine is, for /api/v1/workers
        self._offline_until = 0.0
        self._thread: threading.Thread | None = None
        self._channel = WakeChannel(store, spec.name, self._wake, self._stopping, TICK)
        self._last_problem = ""

    # lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start dispatching in the background; an unreachable Redis is retried there, never raised here."""
        self._thread = threading.Thread(target=self._run, name=f"moi-dispatch-{self.name}", daemon=True)
        self._thread.start()

    def revive(self) -> bool:
        """Start the loop's thread again if it died (it catches every Exception: only a BaseException ends it)."""
        if self._stopping.is_set() or self._thread is None or self._thread.is_alive():
            return False
        loops.restarted(self.store, "dispatcher", f"the dispatcher thread for {self.name} had died", log)
        self.start()
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._channel.stop()
        with contextlib.suppress(redis.RedisError):
            self._release()
        self.context.reset()

    def wake(self) -> None:
        self._wake.set()

    # the loop -------------------------------------------------------------------

    def _run(self) -> None:
        leading, client, next_tick = False, None, 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if time.monotonic() >= next_tick:  # the lease, the controller and the online note: per tick
                    next_tick = time.monotonic() + TICK
                    if not self._channel.listening:
                        self._channel.listen()
                    leading = self._lead()
                    if leading:
                        self._promote()
                    client = self._connected() if leading else None
                if client is not None:  # per wake: as little as can be, since it shares the submitter's CPU
                    self._dispatch(client)
            except (MoiError, redis.RedisError) as error:
                self._complain(error)
                client, next_tick = None, time.monotonic() + TICK
            except Exception as error:  # the thread must outlive any surprise: jobs depend on it
                loops.failed(self.store, "dispatcher", f"dispatching for {self.name}", error, log)
                client, next_tick = None, 0.0
            self._wake.wait(TICK)

    def _promote(self) -> None:
        """Jobs due for their next attempt back in the queue: one call, due or not. Its failure (a script Redis
        refused) is logged and counted, and the context's dispatching goes on; an outage is the tick's."""
        with loops.item(self.store, "dispatcher", f"queueing due retries of {self.name}", log):
            self._retries.promote([self.name])

    def _complain(self, error: Exception) -> None:
        """A warning for each new problem, not one every tick while it lasts (an outage, a cluster down)."""
        text = str(error)
        if text != self._last_problem:
            log.warning("dispatcher for %s: %s", self.name, printable(text))
        self._last_problem = text

    def _lead(self) -> bool:
        """Take or renew the lease; whether this process dispatches for the context now."""
        if self._lease.take():
            return True
        self._outstanding.clear()  # another leads: what we sent is theirs to follow now
        return False

    def _release(self) -> None:
        self._lease.release()

    def _dispatch(self, client: Any) -> None:
        """Work for idle engines while jobs are queued; no Redis call at all while every engine works."""
        if not self._idle(client):
            return
        depth = self.queue.depth(self.name)
        if depth:
            self._send_work(client, depth)

    def _idle(self, client: Any) -> list[int]:
        busy = {engine for engine, task in self._outstanding.items() if not task.ready()}
        return [engine for engine in client.ids if engine not in busy]

    def _connected(self) -> Any:
        """The cluster's client, reconnected after a controller restart; None while it is offline."""
        if time.monotonic() < self._offline_until:
            return None
        try:
            client = self.context.client
            if not controller_alive(self.context.controller()):
                raise ClusterUnavailable(f"the controller of context {self.name!r} is gone or was replaced")
        except ClusterUnavailable as error:
            self._offline(str(error))
            return None
        self._note_online(len(client.ids))
        self._roll.refresh(client)
        if self.scales:
            with loops.item(self.store, "dispatcher", f"retiring engines of {self.name}", log):
                launched.settle(self.store, self.name, client, dict(self._roll.known))
        return client

    def _offline(self, reason: str) -> None:
        log.info("context %s offline: %s", self.name, reason)
        self.context.reset()
        self._outstanding.clear()
        self._offline_until = time.monotonic() + RETRY_OFFLINE
        self.store.redis.delete(self.store.keys.online(self.name))

    def _note_online(self, engines: int) -> None:
        note = json.dumps({"engines": engines, "dispatcher": self.me})
        self.store.redis.set(self.store.keys.online(self.name), note, px=int(LEASE * 1000))

    def _send_work(self, client: Any, depth: int) -> list[Any]:
        """A work task for each idle engine, at most one per queued job; the AsyncResults sent."""
        sent = []
        for engine in self._idle(client)[:depth]:
            task = client[engine].apply_async(ByName(work), self.work_spec)
            task.add_done_callback(self._returned)
            self._outstanding[engine] = task
            sent.append(task)
        if sent:
            log.debug("work sent to %d engine(s) of %s (%d queued)", len(sent), self.name, depth)
        return sent

    def _returned(self, task: Any) -> None:
        # Runs in ipyparallel's IO thread: only wake the loop, which looks at the queue again.
        self._wake.set()

    # exit -----------------------------------------------------------------------

    def deliver_at_exit(self) -> None:
        """Before this process exits: if jobs are queued, leave work for them with the controller.

        Each work task drains the queue, so a script that submits and exits at once still
        gets its jobs run, with no other dispatcher alive.
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._channel.stop()
        try:
            depth = self.queue.depth(self.name)
            if depth and self._lead():
                client = self._connected()
                if client is not None:
                    sent = self._send_work(client, depth)
                    self.context.confirm_delivery([task.msg_ids[0] for task in sent], DELIVER_AT_EXIT)
        except (MoiError, redis.RedisError) as error:
            log.warning("%s; queued jobs of %s wait for the next dispatcher", error, self.name)
        finally:
            with contextlib.suppress(redis.RedisError):
                self._release()


# one per context per process ----------------------------------------------------------


class Dispatching(Protocol):
    """A context's loop in this process: a Dispatcher, or a scheduler context's SchedulerPoller."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def revive(self) -> bool: ...

    def wake(self) -> None: ...

    def deliver_at_exit(self) -> None: ...


_lock = threading.Lock()
_running: dict[tuple[str, str, str], Dispatching] = {}
_exit_registered = False


def ensure(store: Store, spec: ContextSpec, timeout: float = 10.0, scales: bool = False) -> Dispatching:
    """This process's dispatcher for a context (over ``store``'s Redis), started on first use: a scheduler
    context's poller (``moi.compute.schedulers``) for a context that is a batch scheduler.

    ``scales``: it retires the engines removed on the operations page (a cluster the operator started).
    """
    global _exit_registered
    key = (store.url, store.keys.prefix, spec.name)
    with _lock:
        dispatcher = _running.get(key)
        if dispatcher is None:
            made = SchedulerPoller(store, spec) if spec.scheduler else Dispatcher(store, spec, timeout, scales)
            dispatcher = _running[key] = made
            dispatcher.start()
            if not _exit_registered:
                atexit.register(_deliver_all)
                _exit_registered = True
        return dispatcher


def revive_all() -> None:
    """This process's dispatchers whose thread died, started again and reported (each watchdog pass)."""
    with _lock:
        dispatchers = list(_running.values())
    for dispatcher in dispatchers:
        dispatcher.revive()


def stop_all() -> None:
    for dispatcher in _forget_all():
        dispatcher.stop()


def _deliver_all() -> None:
    for dispatcher in _forget_all():
        dispatcher.deliver_at_exit()


def _forget_all() -> list[Dispatching]:
    with _lock:
        dispatchers = list(_running.values())
        _running.clear()
    return dispatchers
