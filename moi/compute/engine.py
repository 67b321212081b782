"""The engine side of liveness and cancellation.

While a job runs, a daemon thread beats: it refreshes the job's heartbeat key
(a short TTL, so it vanishes when the engine dies) and looks at the job's
cancel flag. When the flag is set it interrupts the job function by raising
``JobCancelled`` in the thread that runs it: through a signal when that is the
main thread (so a blocking ``time.sleep`` or ``subprocess`` wait is
interrupted too), otherwise with ``PyThreadState_SetAsyncExc``. A function
that swallows the exception is interrupted again every ``REINTERRUPT_AFTER``
seconds. Writes of the job's state survive a Redis outage by retrying with
backoff for at most ``WRITE_RETRY_FOR`` seconds.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import redis

from moi.core.errors import JobCancelled, RedisUnavailable
from moi.storage.store import Store

log = logging.getLogger("moi.engine")

HEARTBEAT_INTERVAL = 1.0  # seconds between beats, and so between looks at the cancel flag
HEARTBEAT_TTL = 10  # seconds a heartbeat lives: an engine silent this long is lost
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
def in_directory(origin: tuple[Any, ...] | None) -> Iterator[None]:
    """Run where the job was submitted from, first on ``sys.path`` as with ``python -c``, on its host;
    in its job directory when it has one (``origin``'s third part), with the submitter's still on the path.

    Elsewhere (another host, a directory that is gone) the job runs where the
    engine is. Modules imported from the directory are forgotten afterwards,
    so the next job, perhaps from another directory, imports its own.
    """
    host, path, workdir = (*(origin or ()), "", "", "")[:3]
    if not path or host != socket.gethostname() or not os.path.isdir(path):
        path = ""
    if not path and not workdir:
        yield
        return
    before, modules = os.getcwd(), set(sys.modules)
    os.chdir(workdir or path)
    if path:
        sys.path.insert(0, path)
    try:
        yield
    finally:
        os.chdir(before)
        if path:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
            if len(sys.modules) > len(modules):  # only then can a module from there be cached
                _forget_modules_from(path, set(sys.modules) - modules)


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


def workdir_of(origin: tuple[Any, ...] | None) -> str:
    """The job directory a job's call names ('' for none)."""
    return origin[2] if origin and len(origin) > 2 else ""


def _forget_modules_from(path: str, names: set[str]) -> None:
    """Forget the modules the job imported from ``path``, never moi's own (a checkout of
    moi may be that directory: a second copy of its classes would break isinstance)."""
    prefix = os.path.join(path, "")
    for name in names:
        module = sys.modules.get(name)
        if name == "moi" or name.startswith("moi.") or module is None:
            continue
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]


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
    """The heartbeat and the cancel watch of one job on this engine."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.label = engine_label()
        self.cancel_requested = False
        self._thread_id = threading.get_ident()
        self._on_main = threading.current_thread() is threading.main_thread()
        self._active = False  # the job function is running and may be interrupted
        self._shielded = 0  # cleanup that must not be interrupted is running
        self._last_interrupt: float | None = None
        self._lock = threading.Lock()
        self._outage_logged = False

    # lifecycle ----------------------------------------------------------------

    def registering(self) -> list[list[str | int]]:
        """The commands that register the job as running: they go with its Running write, atomically."""
        keys = self.store.keys
        return [
            ["SET", keys.heartbeat(self.job_id), self.label, "EX", HEARTBEAT_TTL],
            ["SADD", keys.running, self.job_id],
        ]

    def unregistering(self) -> list[list[str | int]]:
        """The commands that forget the job's liveness keys: they go with its final write."""
        keys = self.store.keys
        return [["DEL", keys.heartbeat(self.job_id), keys.cancel(self.job_id)], ["SREM", keys.running, self.job_id]]

    def start(self) -> None:
        """Beat in the background (registered by the Running write, which carried ``registering``)."""
        _install_signal_handler()
        _jobs_by_thread[self._thread_id] = self
        _BEATER.add(self)

    def stop(self, unregistered: bool = False) -> None:
        """Stop beating; forget the liveness keys unless the final write did (best effort: they expire)."""
        _BEATER.remove(self)
        _jobs_by_thread.pop(self._thread_id, None)
        if unregistered:
            return
        keys = self.store.keys
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.delete(keys.heartbeat(self.job_id), keys.cancel(self.job_id))
        pipe.srem(keys.running, self.job_id)
        try:
            _execute(self.store, pipe)
        except RedisUnavailable as error:
            log.warning(
                "job %s: could not clear its heartbeat (%s); it expires in %ds", self.job_id, error, HEARTBEAT_TTL
            )

    # the job function ---------------------------------------------------------

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """While the job function runs inside this block, a cancel interrupts it."""
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

    def should_raise(self) -> bool:
        # Read without the lock: this runs inside a signal handler on the job's thread.
        return self._active and self.cancel_requested and not self._shielded

    # the heartbeat ------------------------------------------------------------

    def _beat(self) -> bool:
        """Refresh the heartbeat; whether cancellation is requested."""
        keys = self.store.keys
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.set(keys.heartbeat(self.job_id), self.label, ex=HEARTBEAT_TTL)
        pipe.exists(keys.cancel(self.job_id))
        try:
            _, cancelled = pipe.execute()
        except redis.RedisError as error:
            if not self._outage_logged:
                log.warning("job %s: heartbeat cannot reach Redis (%s); still trying", self.job_id, error)
                self._outage_logged = True
            return self.cancel_requested
        self._outage_logged = False
        return bool(cancelled)

    def _interrupt(self) -> None:
        with self._lock:
            if not self.cancel_requested:
                log.info("job %s: cancellation requested", self.job_id)
            self.cancel_requested = True
            if not self._active or self._shielded:
                return
            now = time.monotonic()
            if self._last_interrupt is not None and now - self._last_interrupt < REINTERRUPT_AFTER:
                return
            self._last_interrupt = now
            if self._on_main:
                signal.pthread_kill(self._thread_id, CANCEL_SIGNAL)
            else:
                _raise_in_thread(self._thread_id)


def _execute(store: Store, pipe: redis.client.Pipeline[str]) -> list[object]:
    try:
        return pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RedisUnavailable(store.url, str(error).splitlines()[0] if str(error) else "") from error


class _Beating(Protocol):
    def _beat(self) -> bool: ...

    def _interrupt(self) -> None: ...


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
    if job is not None and job.should_raise():
        raise JobCancelled(f"Job {job.job_id} was cancelled")


def _install_signal_handler() -> None:
    # Installed for good (never restored): a late signal then finds a handler
    # that ignores it, rather than the default action, which kills the engine.
    if threading.current_thread() is threading.main_thread():
        signal.signal(CANCEL_SIGNAL, _on_cancel_signal)


def _raise_in_thread(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(JobCancelled))


def _clear_async_exception(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
