"""The engine side of liveness, cancellation and time limits.

While a job runs, a daemon thread beats: it refreshes the job's heartbeat key
(a short TTL, so it vanishes when the engine dies), looks at the job's
cancel flag and at its time limits (``moi.compute.time_limits``). When the flag is set it interrupts
the job function by raising ``JobCancelled`` in the thread that runs it: through a signal when that is the
main thread (so a blocking ``time.sleep`` or ``subprocess`` wait is
interrupted too), otherwise with ``PyThreadState_SetAsyncExc``. A function
that swallows the exception is interrupted again every ``REINTERRUPT_AFTER``
seconds. A time limit interrupts the same way, with ``JobSoftTimeLimit`` or ``JobTimeLimit``.
Writes of the job's state survive a Redis outage by retrying with
backoff for at most ``WRITE_RETRY_FOR`` seconds.

An engine refreshes and clears a job's heartbeat only while it holds the engine's own label (the
``BEAT`` and ``LET_GO`` scripts): an engine that comes back after the watchdog gave its job to a new
attempt elsewhere leaves that attempt's keys alone (and its writes are refused: ``moi.compute.attempts``).
Its own attempt is then superseded: the job function is interrupted with ``JobSuperseded`` (a
``JobCancelled``, so its shell commands end as for a cancel), and nothing of it is recorded.
"""

from __future__ import annotations

import contextvars
import ctypes
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import redis

from moi.compute import attempts, time_limits
from moi.compute.heartbeats import HEARTBEAT_INTERVAL, heartbeat_ttl
from moi.core.errors import JobCancelled, JobSoftTimeLimit, JobSuperseded, JobTimeLimit, MoiError, RedisUnavailable
from moi.storage.store import Store

log = logging.getLogger("moi.engine")

REINTERRUPT_AFTER = 10.0  # a job that swallowed JobCancelled is interrupted again after this
WRITE_RETRY_FOR = 60.0  # a state write keeps retrying through a Redis outage this long
CANCEL_SIGNAL = signal.SIGUSR2

T = TypeVar("T")

# The job running on this engine's main thread, for the signal handler.
_main_job: Liveness | None = None
_jobs_by_thread: dict[int, Liveness] = {}
# The job this thread runs, with its store: what moi's own job functions (a service's lifecycle) act on.
_current: contextvars.ContextVar[tuple[Store, dict[str, Any]] | None] = contextvars.ContextVar("moi_job", default=None)


def engine_label() -> str:
    """Where a job runs, as ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


# submitting side: where a job was submitted from --------------------------------


def submitted_from() -> tuple[str, str]:
    """``(host, working directory)`` of this process: a job submitted here runs there."""
    try:
        return socket.gethostname(), os.getcwd()
    except OSError:  # the directory was deleted under us: the job runs where the engine is
        return socket.gethostname(), ""


@contextmanager
def running(store: Store, info: dict[str, Any]) -> Iterator[None]:
    """While a job's function runs: ``current_job()`` answers with its store and info."""
    token = _current.set((store, info))
    try:
        yield
    finally:
        _current.reset(token)


def current_job() -> tuple[Store, dict[str, Any]]:
    """The store and the info (as it started) of the job this thread runs; RuntimeError outside one."""
    found = _current.get()
    if found is None:
        raise RuntimeError("not inside a moi job on an engine")
    return found


def retrying(write: Callable[[], T], what: str, retry_for: float = WRITE_RETRY_FOR) -> T:
    """``write()``, retried with backoff while Redis is unreachable, for at most ``retry_for`` s."""
    deadline = time.monotonic() + retry_for
    delay = 0.25
    while True:
        try:
            return write()
        except RedisUnavailable as error:
            if time.monotonic() + delay > deadline:
                log.error("giving up on %s after %.0fs: %s", what, retry_for, error)
                raise
            log.warning("%s: %s; retrying in %.2fs", what, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


class Liveness:
    """The heartbeat, the cancel watch and the time limits of one job (one attempt of it) on this engine."""

    def __init__(self, store: Store, job_id: str, info: dict[str, Any] | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self.label = engine_label()
        self.attempt = (info or {}).get("attempt")  # the attempt taken: a newer one is not this engine's
        self.limits = time_limits.Deadlines.of(info, time.monotonic())
        self.cancel_requested = False
        self.superseded = False  # a newer attempt holds the job's heartbeat: this one stops, unrecorded
        self.timed_out = False  # its hard time limit interrupted it
        self.soft_limited = False  # its soft time limit warned it
        self.on_abandon: Callable[[str], None] | None = None  # records the job as its engine gives it up
        self._thread_id = threading.get_ident()
        self._on_main = threading.current_thread() is threading.main_thread()
        self._active = False  # the job function is running and may be interrupted
        self._shielded = 0  # cleanup that must not be interrupted is running
        self._raising: type[MoiError] | None = None  # what the signal handler raises in the job
        self._last_interrupt: float | None = None
        self._lock = threading.Lock()
        self._outage_logged = False

    # lifecycle ----------------------------------------------------------------

    def registering(self) -> list[list[str | int]]:
        """The commands that register the job as running: they go with its Running write, atomically."""
        keys = self.store.keys
        return [
            ["SET", keys.heartbeat(self.job_id), self.label, "EX", heartbeat_ttl()],
            ["SADD", keys.running, self.job_id],
        ]

    def unregistering(self) -> list[list[str | int]]:
        """The commands that forget the job's liveness keys: they go with its final write."""
        keys = self.store.keys
        return [["DEL", keys.heartbeat(self.job_id), keys.cancel(self.job_id)], ["SREM", keys.running, self.job_id]]

    def start(self) -> None:
        """Beat in the background (registered by the Running write, which carried ``registering``);
        its time limits count from now."""
        if self.limits is not None:
            self.limits.started = time.monotonic()
        _install_signal_handler()
        _jobs_by_thread[self._thread_id] = self
        _BEATER.add(self)

    def stop(self, unregistered: bool = False) -> None:
        """Stop beating; let go of the liveness keys unless the final write did (best effort: they expire)."""
        _BEATER.remove(self)
        _jobs_by_thread.pop(self._thread_id, None)
        if not unregistered:
            attempts.let_go(self.store, self.label, [self.job_id])

    # the job function ---------------------------------------------------------

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """While the job function runs inside this block, a cancel or a time limit interrupts it."""
        global _main_job
        with self._lock:
            if self.cancel_requested:
                raise JobCancelled(f"Job {self.job_id} was cancelled before it ran")
            self._active = True
            if self._on_main:
                _main_job = self
        try:
            yield
        finally:
            with self._lock:
                self._active = False
                self._raising = None
                if self._on_main:
                    _main_job = None
                else:
                    _clear_async_exception(self._thread_id)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """No interrupt inside this block (cleanup after an interrupt)."""
        with self._lock:
            self._shielded += 1
        try:
            yield
        finally:
            with self._lock:
                self._shielded -= 1

    def pending(self) -> MoiError | None:
        """The interrupt to raise in the job now, once (read without the lock: this runs inside a signal
        handler on the job's thread)."""
        raising = self._raising
        if raising is None or not self._active or self._shielded:
            return None
        self._raising = None
        return raising(_interrupt_message(raising, self.job_id))

    # the heartbeat ------------------------------------------------------------

    def _beat(self) -> bool:
        """Refresh the heartbeat; whether the job must be interrupted: its cancel is requested, or a newer
        attempt holds its heartbeat (then ``superseded``, for good)."""
        answers = self._beat_jobs([self.job_id])
        if answers is None:  # Redis away: as it was
            return self.cancel_requested or self.superseded
        if answers[0] == -1 and not self.superseded:
            self.superseded = True
            log.warning("job %s: attempt %s was superseded by a newer one; interrupting it", self.job_id, self.attempt)
        return self.superseded or answers[0] == 1

    def _beat_jobs(self, ids: list[str]) -> list[int] | None:
        """Refresh the heartbeats of ``ids`` where they are this engine's; per job, 1 when its cancel is
        requested or its info is gone (removed as it ran), 0 when not, -1 when a newer attempt holds it. None
        when Redis cannot be reached."""
        keys = self.store.keys
        try:
            answers = attempts.scripts(self.store)[0](
                keys=[
                    key for job_id in ids for key in (keys.heartbeat(job_id), keys.cancel(job_id), keys.info(job_id))
                ],
                args=[self.label, heartbeat_ttl()],
            )
        except redis.RedisError as error:
            if not self._outage_logged:
                log.warning("job %s: heartbeat cannot reach Redis (%s); still trying", self.job_id, error)
                self._outage_logged = True
            return None
        self._outage_logged = False
        for job_id, answer in zip(ids, answers, strict=True):
            if answer == -1:
                attempts.superseded(job_id, self.attempt)
        return [int(answer) for answer in answers]

    def _interrupt(self) -> None:
        """Interrupt the job function: ``JobSuperseded`` once a newer attempt owns the job, else ``JobCancelled``;
        again every ``REINTERRUPT_AFTER`` seconds while it swallows it."""
        with self._lock:
            if not self.superseded:
                if not self.cancel_requested:
                    log.info("job %s: cancellation requested", self.job_id)
                self.cancel_requested = True
            now = time.monotonic()
            if self._last_interrupt is not None and now - self._last_interrupt < REINTERRUPT_AFTER:
                return
            if self._send(JobSuperseded if self.superseded else JobCancelled):
                self._last_interrupt = now

    def _send(self, error: type[MoiError]) -> bool:
        """Raise ``error`` in the job's function, unless it is not running or is cleaning up; under the lock."""
        if not self._active or self._shielded:
            return False
        if self._on_main:
            self._raising = error
            signal.pthread_kill(self._thread_id, CANCEL_SIGNAL)
        else:
            _raise_in_thread(self._thread_id, error)
        return True

    # time limits --------------------------------------------------------------

    def _watch_limits(self) -> None:
        """At each beat: the soft limit's warning, the hard limit's interrupt, then giving the job up."""
        with self._lock:
            limits = self.limits
            due = limits.due(time.monotonic()) if limits is not None and self._active else None
            if limits is None or due is None:
                return
            if due == time_limits.SOFT:
                limits.warned = self.soft_limited = self._warn()
            elif due == time_limits.HARD:
                limits.interrupted = self.timed_out = self._send(JobTimeLimit)
                if self.timed_out:
                    log.info("job %s: %s; interrupting it", self.job_id, limits.reason())
            else:
                limits.abandoned = True
        if due == time_limits.ABANDON:
            self._abandon(limits.abandoned_reason(self.label))

    def _warn(self) -> bool:
        """The soft limit's warning: SIGTERM to the job's shell commands, else JobSoftTimeLimit; under the lock."""
        groups = time_limits.groups_of(self._thread_id)
        if groups and self._active and not self._shielded:
            time_limits.terminate_groups(groups)
            return True
        return self._send(JobSoftTimeLimit)

    def _abandon(self, reason: str) -> None:
        """The job went on past its hard limit and grace: record it so, and end this engine's process."""
        if self.on_abandon is not None:
            try:
                self.on_abandon(reason)
            except Exception as error:  # the engine ends anyway: the watchdog then fails the job as engine-lost
                log.error("job %s: could not record that it was given up: %s", self.job_id, error)
        time_limits.stop_engine(self.job_id, reason)


def _interrupt_message(error: type[MoiError], job_id: str) -> str:
    if issubclass(error, JobSuperseded):
        return f"Job {job_id} is run by a newer attempt: this one stops"
    if issubclass(error, JobTimeLimit):
        return f"Job {job_id} ran past its time limit"
    if issubclass(error, JobSoftTimeLimit):
        return f"Job {job_id} ran past its soft time limit"
    return f"Job {job_id} was cancelled"


class _Beating(Protocol):
    def _beat(self) -> bool: ...

    def _interrupt(self) -> None: ...

    def _watch_limits(self) -> None: ...


class _Beater:
    """One thread per engine process beats for every job running in it.

    A thread per job would cost its start and join on every job; this one
    ends when no job is left and starts again with the next.
    """

    def __init__(self) -> None:
        self._jobs: dict[int, _Beating] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job: _Beating) -> None:
        with self._lock:
            self._jobs[id(job)] = job
            if self._thread is None or not self._thread.is_alive():  # none yet, or lost in a fork
                self._thread = threading.Thread(target=self._run, name="moi-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, job: _Beating) -> None:
        with self._lock:
            self._jobs.pop(id(job), None)

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL)
            with self._lock:
                jobs = list(self._jobs.values())
                if not jobs:
                    self._thread = None
                    return
            for job in jobs:
                if job._beat():
                    job._interrupt()
                job._watch_limits()


_BEATER = _Beater()


@contextmanager
def shielded() -> Iterator[None]:
    """Shield cleanup in the current job (if any) from a cancel interrupt."""
    job = _jobs_by_thread.get(threading.get_ident())
    if job is None:
        yield
        return
    with job.shielded():
        yield


def _on_cancel_signal(signum: int, frame: object) -> None:
    job = _main_job
    error = job.pending() if job is not None else None
    if error is not None:
        raise error


def _install_signal_handler() -> None:
    # Installed for good (never restored): a late signal then finds a handler
    # that ignores it, rather than the default action, which kills the engine.
    if threading.current_thread() is threading.main_thread():
        signal.signal(CANCEL_SIGNAL, _on_cancel_signal)


def _raise_in_thread(thread_id: int, error: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))


def _clear_async_exception(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
