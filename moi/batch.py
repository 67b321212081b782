"""Batches: many jobs of one function (a parameter sweep), dispatched and recorded together.

Every item is its own job: its own info object, Queued -> Running ->
Success/Failed, each change published on its channel. What is batched is the
cost: the submitter stores all items in a few pipelined round trips and sends
the items to the cluster in chunks, one ipyparallel task per chunk; on the
engine, a recorder gathers the chunk's transitions and writes them with one
Lua call every ``FLUSH_INTERVAL`` (so no change waits longer than that to be
published, however long an item runs).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import arguments, connections, engine
from .context import ByName, Context, by_name
from .errors import MoiError
from .info import Info, Status, encode_result, is_finished, new_id, new_info, now
from .store import Change, Store, store_for

log = logging.getLogger("moi.batch")

FLUSH_INTERVAL = 0.01  # seconds a transition may wait to share a round trip with others
CHUNKS_PER_ENGINE = 4  # enough chunks that engines stay evenly loaded to the end
MAX_CHUNK = 500
ADD_PER_ROUND_TRIP = 1000  # items stored (and announced in one "add") per pipeline

Item = tuple[Info, tuple[Any, ...]]


@dataclass(frozen=True)
class BatchSpec:
    """What an engine needs to record a chunk's jobs: the Redis they live in."""

    redis_url: str
    key_prefix: str
    ttl: int
    origin: tuple[str, str] | None = None  # (host, directory) it was submitted from: items run there

    def store(self) -> Store:
        return store_for(self.redis_url, self.key_prefix, self.ttl)


class Batch:
    """The handle of a submitted batch: its job ids and one ipyparallel task per chunk."""

    def __init__(self, job_ids: list[str], handles: list[Any]) -> None:
        self.job_ids = job_ids
        self.handles = handles

    def __len__(self) -> int:
        return len(self.job_ids)

    def ready(self) -> bool:
        return all(handle.ready() for handle in self.handles)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every chunk is done (every item recorded in Redis); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in self.handles:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            handle.wait(left)
            if not handle.ready():
                return False
        return True

    def get(self, timeout: float | None = None) -> list[Any]:
        """Every item's return value in order; None for an item that failed (its info has the traceback)."""
        if not self.wait(timeout):
            raise TimeoutError(f"batch of {len(self)} jobs not done after {timeout}s")
        return [value for handle in self.handles for value in handle.get()]


# submitting --------------------------------------------------------------


def submit_many(
    ctx: str | Context,
    group: str,
    name: str,
    url: str | None,
    func: Callable[..., Any],
    items: Iterable[Any],
    *,
    chunk_size: int | None = None,
) -> tuple[list[str], str, Batch]:
    """Run ``func(*item)`` for every item, each as its own job under ``group``.

    An item is a tuple of positional arguments; anything else is the single
    argument. Job ``i`` is named ``"<name> [i]"``. Returns ``(job_ids,
    group_id, batch)`` once every job is stored as Queued and announced.
    """
    context = connections.get_context(ctx)
    view = context.view  # connect first: an unreachable cluster writes nothing
    store = connections.store()
    arguments = [item if isinstance(item, tuple) else (item,) for item in items]
    infos = [_new_job(store, f"{name} [{index}]", url, context.name) for index in range(len(arguments))]
    group_id = _store_queued(store, group, infos, context.queued_entry())
    size = chunk_size or chunk_size_for(len(infos), len(context.client.ids))
    spec = BatchSpec(store.url, store.keys.prefix, store.ttl, engine.submitted_from())
    pairs = list(zip(infos, arguments, strict=True))
    handles = []
    func = by_name(func)
    context.deliver_before_exit()
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        handle = view.apply_async(ByName(run_batch), spec, func, chunk)
        handle.add_done_callback(functools.partial(_fail_unfinished, store, [info for info, _ in chunk]))
        handles.append(handle)
    log.debug("submitted %d jobs in %d chunks to %s", len(infos), len(handles), context.name)
    job_ids = [info["id"] for info in infos]
    return job_ids, group_id, Batch(job_ids, handles)


def _store_queued(store: Store, group: str, infos: list[Info], entry: str) -> str:
    """Store and announce the jobs, ADD_PER_ROUND_TRIP per Lua call; the group id."""
    group_id = store.group_id(group)
    for start in range(0, len(infos), ADD_PER_ROUND_TRIP):
        group_id = store.add_queued(group, infos[start : start + ADD_PER_ROUND_TRIP], entry)
    return group_id


def _fail_unfinished(store: Store, infos: list[Info], handle: Any) -> None:
    """A chunk whose task failed (the engine could not load the function, or lost Redis
    for good) must not leave its items Queued or Running: nothing else will end them."""
    error = handle.exception()
    if error is None:
        return
    change = _finish(Status.FAILED, f"Never finished: its batch chunk failed: {error}", "text")
    try:
        store.update_many([(info["id"], change, info) for info in infos])
    except MoiError as failure:  # runs in ipyparallel's IO thread: log, never raise there
        log.warning("a batch chunk failed (%s); its jobs could not be marked Failed: %s", error, failure)


def _new_job(store: Store, name: str, url: str | None, context: str) -> Info:
    job_id = new_id()
    return new_info(job_id, name, "job", store.keys.channel(job_id), url=url, context=context)


def chunk_size_for(items: int, engines: int) -> int:
    """Items per task: a few chunks per engine, so the load evens out and the per-task cost is shared."""
    return max(1, min(MAX_CHUNK, math.ceil(items / (max(1, engines) * CHUNKS_PER_ENGINE))))


# on the engine -----------------------------------------------------------


def run_batch(spec: BatchSpec, func: Callable[..., Any], items: list[Item]) -> list[Any]:
    """The engine side of a chunk: each item Running, called, Success or Failed."""
    store = spec.store()
    recorder = Recorder(store, [info for info, _ in items])
    results: list[Any] = []
    # Heartbeats for the chunk's jobs: if this engine dies, the watchdog fails them.
    with engine.ChunkLiveness(store, [info["id"] for info, _ in items]), recorder, engine.in_directory(spec.origin):
        takes = arguments.accepted(func)  # once per chunk: every item calls the same function
        for info, args in items:
            results.append(_run_item(recorder, info, func, args, takes))
    return results


def _run_item(
    recorder: Recorder, info: Info, func: Callable[..., Any], args: tuple[Any, ...], takes: frozenset[str] | None
) -> Any:
    job_id = info["id"]
    if not recorder.start(job_id):
        return None  # known to be cancelled (or removed) before it started

    def status_update(text: str) -> None:
        recorder.record(job_id, _status(str(text)))

    try:
        result = func(*args, **arguments.moi_kwargs(takes, status_update, info))
    except Exception:
        recorder.record(job_id, _finish(Status.FAILED, traceback.format_exc(), "traceback"))
        return None
    value, result_format = encode_result(result)
    recorder.record(job_id, _finish(Status.SUCCESS, value, result_format))
    return result


def _start() -> Change:
    # Dates are taken when things happen, not when the change is written.
    date_start = now()

    def change(info: Info) -> Info | None:
        if info["status"] != Status.QUEUED:
            return None
        info.update(status=Status.RUNNING, date_start=date_start)
        return info

    return change


def _status(text: str) -> Change:
    def change(info: Info) -> Info | None:
        if is_finished(info):
            return None  # a late status text never reopens a finished job
        info["status"] = text
        return info

    return change


def _finish(status: Status, result: Any, result_format: str) -> Change:
    date_end = now()

    def change(info: Info) -> Info | None:
        if is_finished(info):
            return None
        info.update(status=status, result=result, result_format=result_format, date_end=date_end)
        return info

    return change


class Recorder:
    """Gathers a chunk's changes and writes them together, from a flusher thread and at the end.

    Every change reaches Redis (and its channel) within ``interval`` seconds
    of being recorded, in the order recorded; the flush at the end writes the rest.
    """

    def __init__(self, store: Store, infos: list[Info], interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self.latest = {info["id"]: info for info in infos}  # as last written or read
        self._pending: list[tuple[str, Change]] = []
        self._started: list[str] = []  # among the pending: jobs that start
        self._lock = threading.Lock()  # guards _pending and latest
        self._flushing = threading.Lock()  # one write at a time, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_every_interval, name="moi-batch-recorder", daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def start(self, job_id: str) -> bool:
        """Queue the job's Running; False if it is known to be finished or gone (it must not run)."""
        with self._lock:
            info = self.latest.get(job_id)
            if info is None or is_finished(info):
                return False
            self._pending.append((job_id, _start()))
            self._started.append(job_id)
            return True

    def record(self, job_id: str, change: Change) -> None:
        with self._lock:
            if job_id in self.latest:
                self._pending.append((job_id, change))

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
                started, self._started = self._started, []
                changes = [(job_id, change, self.latest[job_id]) for job_id, change in pending]
            if not changes:
                return
            # Started jobs leave the queued index (the watchdog's) in the same call.
            also = [["HDEL", self.store.keys.queued, *started]] if started else []
            try:
                outcome = self.store.update_many(changes, also)
            except MoiError:
                with self._lock:  # keep them, in order, for the next try
                    self._pending[:0] = pending
                    self._started[:0] = started
                raise
            with self._lock:
                for job_id, _, _ in changes:
                    if job_id in outcome:
                        self.latest[job_id] = outcome[job_id]
                    else:
                        self.latest.pop(job_id, None)  # removed while the batch ran

    def _flush_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except MoiError as error:  # Redis away: the final flush at the end tries again
                log.warning("could not record batch changes yet: %s", error)
