"""A scheduler context's loop: its queued jobs handed to the batch scheduler, then followed to their end.

It plays the part a dispatcher plays for a cluster of engines (``moi.compute.dispatch``), with the same lease:
any number of moi processes run one per scheduler context, one leads. The leader wakes on new jobs (a submit
publishes on ``Pmoi:wake:<ctx>``) and every ``poll`` seconds. Each round it takes the context's queued jobs in
queue order (priorities, fair share, pause and quotas all hold, as for engines), hands each to the scheduler
(``handing``), then asks the scheduler about all of its jobs at once (``following``). What it last saw of the
cluster is kept in ``Pmoi:scheduler:<ctx>`` for ``moi status`` and the operations page.

A cluster out of reach is offline: new jobs wait Queued, with the reason shown, and are submitted when it comes
back; submitted jobs keep their state until ``grace`` seconds have passed, then fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid

import redis

from moi.compute.lease import LEASE, Lease
from moi.compute.schedulers.adapters import adapter_for
from moi.compute.schedulers.following import Follow
from moi.compute.schedulers.handing import Hand
from moi.compute.schedulers.runner import LocalRunner, Runner
from moi.compute.waking import WakeChannel
from moi.core.config import ContextSpec
from moi.core.errors import MoiError, SchedulerUnavailable
from moi.core.info import now
from moi.core.redact import printable
from moi.core.scheduler_settings import SchedulerSpec
from moi.queue.jobqueue import Queue, Taken
from moi.storage import loops
from moi.storage.store import Store

log = logging.getLogger("moi.schedulers")

MOST_PER_ROUND = 500  # jobs handed to the scheduler in one round: the round's poll is not held up for long
TAKEN_TTL = 120  # seconds a taken job's registration lives while it is handed (the watchdog leaves it after)


def runner_for(spec: SchedulerSpec) -> Runner:
    """Where the scheduler's commands run: this machine, or its login node over SSH."""
    if not spec.remote:
        return LocalRunner()
    from moi.compute.schedulers.ssh_runner import SshRunner  # noqa: PLC0415 (asyncssh: only for a remote cluster)

    runner: Runner = SshRunner(spec)
    return runner


class SchedulerPoller:
    """Hands a scheduler context's queued jobs to its batch scheduler, and follows them to their end."""

    def __init__(self, store: Store, spec: ContextSpec) -> None:
        assert spec.scheduler is not None
        self.store, self.name, self.spec = store, spec.name, spec.scheduler
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.label = f"scheduler:{self.name}:{self.me}"
        self.hand = Hand(store, self.spec, adapter_for(self.spec.kind), runner_for(self.spec))
        self.follow = Follow(self.hand)
        self.queue = Queue(store)
        self._lease = Lease(store, store.keys.dispatcher(spec.name), self.me)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._channel = WakeChannel(store, spec.name, self._wake, self._stopping, self.spec.poll)
        self._unreachable_since: float | None = None
        self._next_poll = 0.0
        self._last_problem = ""

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"moi-scheduler-{self.name}", daemon=True)
        self._thread.start()

    def revive(self) -> bool:
        if self._stopping.is_set() or self._thread is None or self._thread.is_alive():
            return False
        loops.restarted(self.store, "scheduler poller", f"the poller thread of {self.name} had died", log)
        self.start()
        return True

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self._channel.stop()
        with contextlib.suppress(redis.RedisError):
            self._lease.release()
        self.hand.runner.close()

    def deliver_at_exit(self) -> None:
        """Before this process exits: its queued jobs handed to the scheduler (a script that submits and exits
        leaves them there, followed by the next moi process that runs)."""
        self.stop()
        try:
            if self._lease.take():
                self.submit_queued(even_stopping=True)
        except (MoiError, redis.RedisError) as error:
            log.warning("%s; queued jobs of %s wait for the next moi process", error, self.name)
        finally:
            with contextlib.suppress(redis.RedisError):
                self._lease.release()

    # the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if not self._channel.listening:
                    self._channel.listen()
                if self._lease.take():
                    self.round()
            except (MoiError, redis.RedisError) as error:
                self._complain(error)
            except Exception as error:  # the thread must outlive any surprise: jobs depend on it
                loops.failed(self.store, "scheduler poller", f"following {self.name}", error, log)
            self._wake.wait(min(self.spec.poll, LEASE / 3))

    def round(self) -> None:
        """Queued jobs submitted (on every wake), then, once ``poll`` seconds have passed, every job of the
        context polled; the context's sight recorded."""
        try:
            if self._unreachable_since is None or time.monotonic() >= self._next_poll:
                self.submit_queued()  # an offline cluster is tried again at the next poll, not on every submit
            if time.monotonic() < self._next_poll:
                return
            self._next_poll = time.monotonic() + self.spec.poll
            counts = self._poll()
        except SchedulerUnavailable as error:
            self._next_poll = time.monotonic() + self.spec.poll
            self._offline(str(error))
            return
        self._unreachable_since = None
        self._record(True, "", counts)

    def _poll(self) -> dict[str, int] | None:
        """Every job of the context polled and moved on; how many pend and run there (None: the poll broke on
        a surprise, logged and counted: the context is still online, its jobs keep their state till the next)."""
        try:
            jobs = self.follow.jobs()
            return self.follow.poll(jobs) if jobs else {"pending": 0, "running": 0}
        except (MoiError, redis.RedisError):  # the cluster or Redis out of reach: the round's to handle
            raise
        except Exception as error:
            loops.failed(self.store, "scheduler poller", f"polling {self.name}", error, log)
            return None

    def submit_queued(self, even_stopping: bool = False) -> int:
        """The context's queued jobs handed to its scheduler, in queue order; how many. A stopping poller
        stops handing them over, unless ``even_stopping`` (its process's last act: ``deliver_at_exit``)."""
        handed = 0
        while handed < MOST_PER_ROUND and (even_stopping or not self._stopping.is_set()):
            taken = self.queue.take(self.name, self.label, TAKEN_TTL, still_queued=True)
            if not taken:
                break
            self._hand_over(taken[0])
            handed += 1
        return handed

    def _hand_over(self, taken: Taken) -> None:
        try:
            self.hand.submit(taken)
        except SchedulerUnavailable:
            # its users see this reason: the detail (the cluster's account, key and paths) is for the log and /ops
            reason = f"for the cluster of context {self.name}, which cannot be reached now"
            self.hand.give_back(taken, self.label, reason)
            raise

    # offline -----------------------------------------------------------------------------

    def _offline(self, reason: str) -> None:
        """The cluster out of reach: noted; its submitted jobs failed once it has been so past ``grace``."""
        moment = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = moment
            log.warning("scheduler context %s unreachable: %s", self.name, printable(reason))
        self._record(False, reason, None)
        self.store.redis.delete(self.store.keys.online(self.name))
        if moment - self._unreachable_since > self.spec.grace:
            why = f"Its cluster ({self.spec.where}) was out of reach for more than {self.spec.grace:g}s: {reason}"
            self.follow.fail_stranded([job for job in self.follow.jobs() if job.get("scheduler")], why)

    def _record(self, reachable: bool, error: str, counts: dict[str, int] | None) -> None:
        """What ``moi status`` and the operations page show of this context; the context noted online."""
        key = self.store.keys.scheduler_seen(self.name)
        seen = json.loads(self.store.redis.get(key) or "{}")
        seen.update(kind=self.spec.kind, where=self.spec.where, reachable=reachable, error=error, polled=now())
        if counts is not None:
            seen.update(counts)
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.set(key, json.dumps(seen))
        if reachable:
            pipe.set(self.store.keys.online(self.name), json.dumps({"scheduler": self.spec.kind}), px=int(LEASE * 1000))
        pipe.execute()

    def _complain(self, error: Exception) -> None:
        text = str(error)
        if text != self._last_problem:
            log.warning("scheduler poller of %s: %s", self.name, printable(text))
        self._last_problem = text
