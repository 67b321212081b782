"""The engine side of batches: a block of one batch's items, taken together and run one after another.

An engine takes a batch's items from the queue in blocks (``Queue.take`` with
``most``), sized to hold about ``BLOCK_SECONDS`` of work by the pace of the
batch's items run so far: the first block is one item. Taking registers the
items (heartbeat, running set); each is marked Running as it starts, and a
``Recorder`` writes those changes and the outcomes together every
``FLUSH_INTERVAL``, so an item quicker than that costs one write. The batch's
function is loaded once per engine. Each item is still a job like any other: its
heartbeat beats until it ends, a cancel interrupts it (or ends it before it
starts), and once an item has run for ``RELEASE_AFTER`` seconds the items of its
block not started yet go back to the queue, for other engines, so a long item
holds no short ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from moi.compute import arguments, engine
from moi.compute.running import pickled
from moi.core.errors import FetchFailed, MoiError
from moi.core.info import Info, Status, encode_result, is_finished, now
from moi.jobfiles import on_engine as job_files
from moi.queue.jobqueue import Queue, Taken, batch_of, item_arguments, unpack_call
from moi.storage.store import Change, Store

log = logging.getLogger("moi.block")

BLOCK_SECONDS = 0.01  # the work a block holds, by its batch's pace so far
MAX_BLOCK = 500  # items in a block at most
RELEASE_AFTER = 1.0  # seconds an item runs before the rest of its block goes back to the queue
FLUSH_INTERVAL = 0.01  # seconds an outcome may wait to share a round trip with others
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
    recorder = Recorder(store, [job.info for job in taken])
    with recorder:
        try:
            loaded = batches.load(batch_id)
        except Exception as error:  # a function this engine cannot load (a module it lacks) fails its items
            reason = f"Never started: engine {engine.engine_label()} could not load the job's function: {error!r}"
            for job in taken:
                recorder.finish(job.info["id"], Status.FAILED, reason, "text")
            return
        watch = BlockLiveness(store, queue, context, taken)
        began = time.monotonic()
        with watch.beating(), engine.in_directory(loaded.origin):
            ran = 0
            while (item := watch.next_item()) is not None:
                _run_item(recorder, watch, loaded, item)
                ran += 1
        loaded.ran(ran, time.monotonic() - began)


def _run_item(recorder: Recorder, watch: BlockLiveness, loaded: BatchFunction, job: Taken) -> None:
    job_id = job.info["id"]
    if job.info["status"] != Status.QUEUED:  # changed before it was taken (an old queue entry): not ours to run
        watch.done(job_id)
        recorder.forget(job_id)
        return
    try:
        args = item_arguments(job.call)
    except Exception as error:
        watch.done(job_id)
        reason = f"Never started: engine {watch.label} could not load the job's arguments: {error!r}"
        recorder.finish(job_id, Status.FAILED, reason, "text")
        return

    directory = loaded.directory_of(job_id)
    if directory and not os.path.isdir(directory):  # a jobs root this host does not share
        watch.done(job_id)
        recorder.finish(job_id, Status.FAILED, job_files.unseen(directory, watch.label), "text")
        return

    def status_update(text: str) -> None:
        recorder.record(job_id, _status(str(text)))

    ran = False
    try:
        with watch.interruptible():
            ran = True
            recorder.record(job_id, _start(watch.label))
            with _in_directory(directory), job_files.job_environment(directory):
                result = _call_item(loaded, job, args, status_update, directory)
    except BaseException as error:  # KeyboardInterrupt or SystemExit must not leave it Running either
        watch.done(job_id)
        held = _held(directory)
        if watch.cancel_requested:
            reason = "Cancelled while running" if ran else "Cancelled before it started"
            recorder.finish(job_id, Status.CANCELLED, reason, "text", held=held)
        elif isinstance(error, FetchFailed):  # its reason says it all
            recorder.finish(job_id, Status.FAILED, str(error), "text", held=held)
        else:
            recorder.finish(job_id, Status.FAILED, traceback.format_exc(), "traceback", pickled(error), held)
        if not isinstance(error, Exception):
            watch.give_back_the_rest()
            raise
        return
    watch.done(job_id)
    value, result_format = encode_result(result)
    kept = pickled(result) if result_format == "repr" else None
    recorder.finish(job_id, Status.SUCCESS, value, result_format, kept, _held(directory))


def _call_item(
    loaded: BatchFunction, job: Taken, args: tuple[Any, ...], status_update: Callable[[str], None], directory: str
) -> Any:
    """The item's function, with its inputs fetched first and its outputs sent after, when it has a directory."""
    transfers = loaded.transfers_of(job.info["id"]) if directory else {}
    if directory:
        job_files.bring_in(directory, transfers)
    result = loaded.func(*args, **arguments.moi_kwargs(loaded.takes, status_update, job.info, directory))
    if directory:
        job_files.send_out(directory, transfers)
    return result


def _in_directory(directory: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.chdir(directory) if directory else contextlib.nullcontext()


def _held(directory: str) -> dict[str, int] | None:
    return job_files.held(directory)  # never raises: nothing may keep the final write from landing


def _status(text: str) -> Change:
    def change(info: Info) -> Info | None:
        if is_finished(info):
            return None  # a late status text never reopens a finished job
        info["status"] = text
        return info

    return change


def _start(label: str) -> Change:
    # Dates are taken when things happen, not when the change is written.
    date_start = now()

    def change(info: Info) -> Info | None:
        if info["status"] != Status.QUEUED:
            return None
        info.update(status=Status.RUNNING, date_start=date_start, engine=label)
        info.pop("waiting", None)
        return info

    return change


def _finish(status: Status, result: Any, result_format: str, held: dict[str, int] | None = None) -> Change:
    date_end = now()

    def change(info: Info) -> Info | None:
        if is_finished(info):
            return None
        info.update(status=status, result=result, result_format=result_format, date_end=date_end)
        if held is not None:
            info["files"] = held
        return info

    return change


class BlockLiveness(engine.Liveness):
    """The heartbeats and cancel watch of a block's items: the one running and those still to come.

    The beater thread refreshes every unfinished item's heartbeat, looks at their
    cancel flags, interrupts the running item when its flag is set, and gives the
    items not started back to the queue once the running one has taken
    RELEASE_AFTER seconds. It does all that under the lock that ``next_item``
    takes, so an item given back is never also started here.
    """

    def __init__(self, store: Store, queue: Queue, context: str, taken: list[Taken]) -> None:
        super().__init__(store, taken[0].info["id"])
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
            return job

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
        keys = self.store.keys
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.set(keys.heartbeat(job_id), self.label, ex=engine.HEARTBEAT_TTL)
            pipe.exists(keys.cancel(job_id))
        try:
            answers = pipe.execute() if ids else []
        except redis.RedisError as error:
            if not self._outage_logged:
                log.warning("batch block: heartbeats cannot reach Redis (%s); still trying", error)
                self._outage_logged = True
            return set()
        self._outage_logged = False
        return {job_id for job_id, flagged in zip(ids, answers[1::2], strict=True) if flagged}

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


class Recorder:
    """Gathers a block's changes and writes them together, from a flusher thread and at the end.

    Every change reaches Redis (and its channel) within ``interval`` seconds
    of being recorded, in the order recorded; the flush at the end writes the rest.
    What one item went through within one interval (Running, status texts, its
    outcome) is written and announced as one change: a quick item costs one write.
    """

    def __init__(self, store: Store, infos: list[Info], interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self.latest = {info["id"]: info for info in infos}  # as last written or read
        self._pending: list[tuple[str, Change]] = []
        self._also: list[list[str | int]] = []  # commands that go with the pending changes
        self._ended: list[str] = []  # items whose liveness keys go with the pending changes
        self._lock = threading.Lock()  # guards _pending, _also and latest
        self._flushing = threading.Lock()  # one write at a time, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_every_interval, name="moi-batch-recorder", daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        engine.retrying(self.flush, "recording a batch block's outcomes")

    def record(self, job_id: str, change: Change, also: list[list[str | int]] | None = None) -> None:
        with self._lock:
            if job_id in self.latest:
                self._pending.append((job_id, change))
                self._also += also or []

    def finish(
        self,
        job_id: str,
        status: Status,
        result: Any,
        result_format: str,
        value: str | None = None,
        held: dict[str, int] | None = None,
    ) -> None:
        """An item's final state, with its liveness keys dropped, its pickled ``value`` kept, and
        ``held``: what its directory holds."""
        with self._lock:
            self._ended.append(job_id)
            if value is not None:
                self._also.append(["SET", self.store.keys.value(job_id), value, "EX", self.store.ttl])
        self.record(job_id, _finish(status, result, result_format, held))

    def forget(self, job_id: str) -> None:
        """An item this engine will not run: only its liveness keys go."""
        with self._lock:
            self._ended.append(job_id)
            self.latest.pop(job_id, None)

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, []
                also, self._also = self._also, []
                ended, self._ended = self._ended, []
                chained = _one_per_item(pending)
                changes = [(job_id, change, self.latest[job_id]) for job_id, change in chained if job_id in self.latest]
            if not changes and not ended:
                return
            try:
                outcome = self._write(changes, also, ended)
            except MoiError:
                with self._lock:  # keep them, in order, for the next try
                    self._pending[:0] = pending
                    self._also[:0] = also
                    self._ended[:0] = ended
                raise
            with self._lock:
                for job_id, _, _ in changes:
                    if job_id in outcome:
                        self.latest[job_id] = outcome[job_id]
                    else:
                        self.latest.pop(job_id, None)  # removed while the batch ran

    def _write(
        self, changes: list[tuple[str, Change, Info]], also: list[list[str | int]], ended: list[str]
    ) -> dict[str, Info]:
        keys = self.store.keys
        if ended:  # one command each for every item that ended, not one per item
            also = [*also, ["DEL", *(key for job_id in ended for key in (keys.heartbeat(job_id), keys.cancel(job_id)))]]
            also.append(["SREM", keys.running, *ended])
        if not changes:
            self.store.write_many([], also)  # only liveness keys to drop
            return {}
        return self.store.update_many(changes, also)

    def _flush_every_interval(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except MoiError as error:  # Redis away: the final flush at the end tries again
                log.warning("could not record batch changes yet: %s", error)


def _one_per_item(pending: list[tuple[str, Change]]) -> list[tuple[str, Change]]:
    """The pending changes of each item chained into one, in the order the items first came."""
    chains: dict[str, list[Change]] = {}
    for job_id, change in pending:
        chains.setdefault(job_id, []).append(change)
    return [(job_id, changes[0] if len(changes) == 1 else _chained(changes)) for job_id, changes in chains.items()]


def _chained(changes: list[Change]) -> Change:
    def change(info: Info) -> Info | None:
        changed = None
        for step in changes:
            changed = step(dict(changed or info)) or changed  # a step that changes nothing keeps what came before
        return changed

    return change
