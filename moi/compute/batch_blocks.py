"""The engine side of batches: a block of one batch's items, taken together and run one after another.

An engine takes a batch's items from the queue in blocks (``Queue.take`` with
``most``), sized to hold about ``BLOCK_SECONDS`` of work by the pace of the
batch's items run so far: the first block is one item. Taking registers the
items (heartbeat, running set); each is marked Running as it starts, and a
``Recorder`` (``moi.compute.block_recorder``) writes those changes and the outcomes
together every ``FLUSH_INTERVAL``, so an item quicker than that costs one write. The batch's
function is loaded once per engine. Each item is still a job like any other: its
heartbeat beats until it ends, a cancel interrupts it (or ends it before it
starts), and once an item has run for ``RELEASE_AFTER`` seconds the items of its
block not started yet go back to the queue, for other engines, so a long item
holds no short ones. An item's time limits count from its own start; an item that has attempts is
written alone as it ends (its next attempt queued, when it failed and may retry: see ``Recorder.finish``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moi.compute import arguments, engine, time_limits
from moi.compute.block_recorder import Recorder
from moi.compute.origin import in_directory
from moi.compute.running import pickled
from moi.core.errors import FetchFailed, JobSoftTimeLimit, JobTimeLimit, MoiError
from moi.core.info import Status, encode_result
from moi.jobfiles import on_engine
from moi.queue.jobqueue import Queue, Taken, batch_of, item_arguments, unpack_call
from moi.storage.store import Store

log = logging.getLogger("moi.block")

BLOCK_SECONDS = 0.01  # the work a block holds, by its batch's pace so far
MAX_BLOCK = 500  # items in a block at most
RELEASE_AFTER = 1.0  # seconds an item runs before the rest of its block goes back to the queue
BATCHES_KEPT = 64  # batch functions an engine keeps loaded


@dataclass
class BatchFunction:
    """A batch's function as loaded on this engine, and how long its items took here."""

    func: Callable[..., Any]
    origin: Any
    takes: frozenset[str] | None
    files: dict[str, Any] | None = None  # the jobs root and what moves, when each item has a directory
    seconds_per_item: float | None = None

    def directory_of(self, job_id: str) -> str:
        return os.path.join(self.files["jobs_root"], job_id) if self.files else ""

    def transfers_of(self, job_id: str) -> dict[str, Any]:
        """What moves for one item: the batch's inputs and resources; its own folder of the outputs."""
        outputs = (self.files or {}).get("outputs")
        return {**(self.files or {}), "outputs": f"{outputs.rstrip('/')}/{job_id}" if outputs else ""}

    def ran(self, items: int, seconds: float) -> None:
        if items:
            self.seconds_per_item = seconds / items


class Batches:
    """The functions of the batches this engine took items of, loaded once each, and their pace."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.last: str | None = None  # the batch of the last block: the next block is sized for it
        self._loaded: dict[str, BatchFunction] = {}

    def block_size(self) -> tuple[int, str | None]:
        """How many items of which batch the next take may bring: about BLOCK_SECONDS' worth."""
        loaded = self._loaded.get(self.last or "")
        if loaded is None or loaded.seconds_per_item is None:
            return 1, self.last
        return max(1, min(MAX_BLOCK, int(BLOCK_SECONDS / max(loaded.seconds_per_item, 1e-6)))), self.last

    def load(self, batch_id: str) -> BatchFunction:
        """The batch's function, from its call in Redis the first time; raises what went wrong."""
        self.last = batch_id
        if batch_id not in self._loaded:
            shared = self.queue.call_of(batch_id)
            if shared is None:
                raise LookupError(f"the call of its batch {batch_id} is gone (expired or removed)")
            func, _, _, origin = unpack_call(shared)
            if len(self._loaded) >= BATCHES_KEPT:
                self._loaded.clear()
            files = origin[3] if isinstance(origin, tuple) and len(origin) > 3 else None
            self._loaded[batch_id] = BatchFunction(func, origin, arguments.accepted(func), files)
        return self._loaded[batch_id]


def run(store: Store, queue: Queue, context: str, taken: list[Taken], batches: Batches) -> None:
    """Run a block of one batch's items, taken by this engine, and record each start and outcome."""
    batch_id = batch_of(taken[0].call) or ""
    recorder = Recorder(store, [job.info for job in taken], engine.engine_label())
    with recorder:
        try:
            loaded = batches.load(batch_id)
        except Exception as error:  # a function this engine cannot load (a module it lacks) fails its items
            reason = f"Never started: engine {engine.engine_label()} could not load the job's function: {error!r}"
            for job in taken:
                recorder.finish(job.info["id"], Status.FAILED, reason, "text")
            return
        watch = BlockLiveness(store, queue, context, taken)
        watch.on_abandon = functools.partial(_given_up, recorder, watch)
        began = time.monotonic()
        with watch.beating(), in_directory(loaded.origin):
            ran = 0
            while (item := watch.next_item()) is not None:
                _run_item(recorder, watch, loaded, item)
                ran += 1
        loaded.ran(ran, time.monotonic() - began)


def _run_item(recorder: Recorder, watch: BlockLiveness, loaded: BatchFunction, job: Taken) -> None:
    job_id = job.info["id"]
    args = _startable(recorder, watch, loaded, job)
    if args is None:
        return
    directory = loaded.directory_of(job_id)
    ran = False
    try:
        with watch.interruptible():
            ran = True
            recorder.start(job_id, watch.label)
            with _in_directory(directory), on_engine.job_environment(directory):
                result = _call_item(loaded, job, args, functools.partial(recorder.status, job_id), directory)
                if watch.timed_out:  # it caught JobTimeLimit and returned: past its limit all the same
                    raise JobTimeLimit(f"Job {job_id} ran past its time limit")
    except BaseException as error:  # KeyboardInterrupt or SystemExit must not leave it Running either
        watch.done(job_id)
        _record_failure(recorder, watch, job_id, error, ran, _held(directory))
        if not isinstance(error, Exception):
            watch.give_back_the_rest()
            raise
        return
    watch.done(job_id)
    value, result_format = encode_result(result)
    kept = pickled(result) if result_format == "repr" else None
    recorder.finish(job_id, Status.SUCCESS, value, result_format, kept, _held(directory))


def _startable(recorder: Recorder, watch: BlockLiveness, loaded: BatchFunction, job: Taken) -> tuple[Any, ...] | None:
    """The item's arguments, when it may start here; None when it ended (or is not ours) before it started."""
    job_id = job.info["id"]
    if job.info["status"] != Status.QUEUED:  # changed before it was taken (an old queue entry): not ours to run
        watch.done(job_id)
        recorder.forget(job_id)
        return None
    try:
        args = item_arguments(job.call)
    except Exception as error:
        watch.done(job_id)
        reason = f"Never started: engine {watch.label} could not load the job's arguments: {error!r}"
        recorder.finish(job_id, Status.FAILED, reason, "text")
        return None
    directory = loaded.directory_of(job_id)
    if directory and not os.path.isdir(directory):  # a jobs root this host does not share
        watch.done(job_id)
        recorder.finish(job_id, Status.FAILED, on_engine.unseen(directory, watch.label), "text")
        return None
    return args


def _record_failure(
    recorder: Recorder, watch: BlockLiveness, job_id: str, error: BaseException, ran: bool, held: dict[str, int] | None
) -> None:
    """How the item ended, from within its ``except``: past its time limit, cancelled, its inputs not
    fetched, or failed."""
    limits = watch.limits
    if watch.timed_out and limits is not None:
        reason = limits.reason()
        recorder.finish(job_id, Status.FAILED, reason, "text", held=held, cause=JobTimeLimit(reason))
    elif watch.cancel_requested:
        reason = "Cancelled while running" if ran else "Cancelled before it started"
        recorder.finish(job_id, Status.CANCELLED, reason, "text", held=held)
    elif isinstance(error, JobSoftTimeLimit) and watch.soft_limited and limits is not None:
        recorder.finish(job_id, Status.FAILED, limits.reason(soft=True), "text", held=held, cause=error)
    elif isinstance(error, FetchFailed):  # its reason says it all
        recorder.finish(job_id, Status.FAILED, str(error), "text", held=held, cause=error)
    else:
        text = traceback.format_exc()
        recorder.finish(job_id, Status.FAILED, text, "traceback", pickled(error), held, cause=error)


def _given_up(recorder: Recorder, watch: BlockLiveness, reason: str) -> None:
    """The running item went on past its hard time limit and grace: recorded so, and the rest of the block
    given back, from the beater thread, before the engine ends (``moi.compute.time_limits``)."""
    job_id = watch.current
    if job_id is not None:
        recorder.finish(job_id, Status.FAILED, reason, "text", cause=JobTimeLimit(reason))
    watch.give_back_the_rest()
    engine.retrying(recorder.flush, "recording a batch block's outcomes")


def _call_item(
    loaded: BatchFunction, job: Taken, args: tuple[Any, ...], status_update: Callable[[str], None], directory: str
) -> Any:
    """The item's function, with its inputs fetched first and its outputs sent after, when it has a directory."""
    transfers = loaded.transfers_of(job.info["id"]) if directory else {}
    if directory:
        on_engine.bring_in(directory, transfers)
    result = loaded.func(*args, **arguments.moi_kwargs(loaded.takes, status_update, job.info, directory))
    if directory:
        on_engine.send_out(directory, transfers)
    return result


def _in_directory(directory: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.chdir(directory) if directory else contextlib.nullcontext()


def _held(directory: str) -> dict[str, int] | None:
    return on_engine.held(directory)  # never raises: nothing may keep the final write from landing


class BlockLiveness(engine.Liveness):
    """The heartbeats and cancel watch of a block's items: the one running and those still to come.

    The beater thread refreshes every unfinished item's heartbeat, looks at their
    cancel flags, interrupts the running item when its flag is set, and gives the
    items not started back to the queue once the running one has taken
    RELEASE_AFTER seconds. It does all that under the lock that ``next_item``
    takes, so an item given back is never also started here.
    """

    def __init__(self, store: Store, queue: Queue, context: str, taken: list[Taken]) -> None:
        super().__init__(store, taken[0].info["id"])  # each item's attempt and limits: see next_item
        self.queue = queue
        self.context = context
        self._to_come: deque[Taken] = deque(taken)
        self._current: str | None = None
        self._since = 0.0
        self._flagged: set[str] = set()  # items whose cancel flag was seen

    @contextmanager
    def beating(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop(unregistered=True)  # each item's final write unregisters it

    def next_item(self) -> Taken | None:
        """The next item to run, now the current one; None when the block is done (or given back)."""
        with self._lock:
            if not self._to_come:
                self._current = None
                return None
            job = self._to_come.popleft()
            self.job_id = self._current = job.info["id"]
            self._since = time.monotonic()
            self.cancel_requested = self.job_id in self._flagged
            self._last_interrupt = None
            self.attempt = job.info.get("attempt")
            self.limits = time_limits.Deadlines.of(job.info, self._since)  # from its own start
            self.timed_out = self.soft_limited = False
            return job

    @property
    def current(self) -> str | None:
        """The item running now, if any."""
        return self._current

    def done(self, job_id: str) -> None:
        """The item ended here: no more heartbeats for it (its final write deletes the key)."""
        with self._lock:
            if self._current == job_id:
                self._current = None

    def give_back_the_rest(self) -> None:
        """The items not started go back to the queue now (the engine is being interrupted)."""
        with self._lock:
            self._give_back()

    def _beat(self) -> bool:
        with self._lock:
            ids = [job.info["id"] for job in self._to_come]
            if self._current is not None:
                ids.append(self._current)
            self._flagged |= self._flags(ids)
            if self._current is not None and time.monotonic() - self._since >= RELEASE_AFTER:
                self._give_back()
            return self._current in self._flagged

    def _flags(self, ids: list[str]) -> set[str]:
        """Beat for ``ids``; those whose cancel is requested (none when Redis is away: the next beat looks)."""
        answers = self._beat_jobs(ids) if ids else None
        if not answers:
            return set()
        return {job_id for job_id, flagged in zip(ids, answers, strict=True) if flagged == 1}

    def _give_back(self) -> None:
        # Under the lock: next_item can no longer hand these out.
        if not self._to_come:
            return
        jobs = list(self._to_come)
        try:
            back = self.queue.release(self.context, self.label, jobs)
        except MoiError as error:  # Redis away: they stay in this block, and run here
            log.warning("batch block: could not give %d items back to the queue: %s", len(jobs), error)
            return
        self._to_come.clear()
        log.info("batch block: %d items given back to the queue (%d went back)", len(jobs), back)

    def _interrupt(self) -> None:
        with self._lock:
            if self._current is None or self._current not in self._flagged:
                return  # the flagged item ended meanwhile: never interrupt its successor
        super()._interrupt()
