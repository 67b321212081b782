"""The outcomes of a batch block's items, gathered and written together (``moi.compute.batch_blocks`` runs them).

A ``Recorder`` keeps each item's changes (Running, status texts, its outcome) and
writes them every ``FLUSH_INTERVAL`` from a flusher thread, and the rest at the
end of the block: what one item went through within one interval is written and
announced as one change, so an item quicker than that costs one write. An item that has attempts
(it may retry, or is idempotent) ends with a write of its own, whose liveness keys go only if it lands,
and every change of it is refused once a newer attempt owns it (``moi.compute.attempts``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from moi.compute import attempts, engine
from moi.core.errors import MoiError, UnknownId
from moi.core.info import Info, Status, is_finished, now
from moi.storage.store import Change, Store

# The block's logger still: the recorder is part of running a block, and logging set up for it stays as it was.
log = logging.getLogger("moi.block")

FLUSH_INTERVAL = 0.01  # seconds an outcome may wait to share a round trip with others


class Recorder:
    """Gathers a block's changes and writes them together, from a flusher thread and at the end.

    Every change reaches Redis (and its channel) within ``interval`` seconds
    of being recorded, in the order recorded; the flush at the end writes the rest.
    What one item went through within one interval (Running, status texts, its
    outcome) is written and announced as one change: a quick item costs one write.
    """

    def __init__(self, store: Store, infos: list[Info], label: str = "", interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.label = label or engine.engine_label()  # the engine's: liveness keys it lets go of are its own
        self.interval = interval
        self.latest = {info["id"]: info for info in infos}  # as last written or read
        # The attempt taken of each item that has attempts: its writes are that attempt's only.
        self.attempts = {info["id"]: info["attempt"] for info in infos if "attempt" in info}
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
        change = attempts.guarded(change, job_id, self.attempts.get(job_id))
        with self._lock:
            if job_id in self.latest:
                self._pending.append((job_id, change))
                self._also += also or []

    def start(self, job_id: str, label: str) -> None:
        """The item is Running, on the engine ``label``, from now."""
        self.record(job_id, _start(label))

    def status(self, job_id: str, text: str) -> None:
        """The item's own status text (its ``status_update``)."""
        self.record(job_id, _status(str(text)))

    def finish(
        self,
        job_id: str,
        status: Status,
        result: Any,
        result_format: str,
        value: str | None = None,
        held: dict[str, int] | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """An item's final state, with its liveness keys dropped, its pickled ``value`` kept, and
        ``held``: what its directory holds; ``cause``: what failed it (a retry may be for it)."""
        if job_id in self.attempts:
            ending = {"status": status, "result": result, "result_format": result_format, "files": held}
            self._finish_alone(job_id, ending, value, cause)
            return
        with self._lock:
            self._ended.append(job_id)
            if value is not None:
                self._also.append(["SET", self.store.keys.value(job_id), value, "EX", self.store.ttl])
        self.record(job_id, _finish(status, result, result_format, held))

    def _finish_alone(self, job_id: str, ending: Info, value: str | None, cause: BaseException | None) -> None:
        """The final write of an item that has attempts: alone, after what came before it, its liveness keys
        going with it only if it lands (a newer attempt's stay), or its next attempt queued instead (Cancelled
        when its cancel was asked as it failed). ``ending``: its status, result, result_format and files."""
        engine.retrying(self.flush, "recording a batch block's outcomes")  # its Running write first
        with self._lock:
            known = self.latest.get(job_id)
        if known is None:
            return  # removed while the batch ran
        keys = self.store.keys
        unregistering: list[list[str | int]] = [["DEL", keys.heartbeat(job_id), keys.cancel(job_id)]]
        unregistering.append(["SREM", keys.running, job_id])
        also = list(unregistering)
        change = _finish(ending["status"], ending["result"], ending["result_format"], ending["files"])
        retry = None
        if ending["status"] == Status.FAILED and attempts.retry_wanted(known, cause):
            ended = {"result": ending["result"], "result_format": ending["result_format"], "date_end": now()}
            retry = attempts.next_attempt_write(keys, job_id, known, ended, self.store.ttl_of(known))
        if retry is not None:
            change, commands = retry
            also += commands
        elif value is not None:
            also.append(["SET", keys.value(job_id), value, "EX", self.store.ttl])
        unless = keys.cancel(job_id) if retry is not None else None
        new, refused = self._write_alone(job_id, self._guarded(change, job_id), known, also, unless)
        if refused and new is not None:  # its cancel was asked as it failed: never retried, nor lost
            cancelled = _finish(Status.CANCELLED, "Cancelled while running", "text", ending["files"])
            new, _ = self._write_alone(job_id, self._guarded(cancelled, job_id), new, unregistering)
        with self._lock:
            if new is None:
                self.latest.pop(job_id, None)
            else:
                self.latest[job_id] = new

    def _guarded(self, change: Change, job_id: str) -> Change:
        return attempts.guarded(change, job_id, self.attempts[job_id])

    def _write_alone(
        self, job_id: str, change: Change, known: Info, also: list[list[str | int]], unless_key: str | None = None
    ) -> tuple[Info | None, bool]:
        """One item's write, with ``also`` if it lands; where it does not, the engine lets go of the
        item's liveness keys that are still its own. The item as it now stands (None once it is gone), and
        whether the write was refused because ``unless_key`` existed (then nothing is let go of yet)."""
        made: list[Info | None] = []

        def counted(info: Info) -> Info | None:
            made[:] = [change(info)]
            return made[0]

        try:
            new: Info | None = engine.retrying(
                lambda: self.store.update(job_id, counted, known, also=also, unless_key=unless_key),
                f"recording batch item {job_id}",
            )
        except UnknownId:
            new = None
        written = bool(made) and made[0] is not None and new is made[0]  # update returns the change's own dict
        refused = bool(made) and made[0] is not None and new is not None and not written
        if not written and not refused:
            attempts.let_go(self.store, self.label, [job_id])
        return new, refused

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
        info.pop("retry_at", None)  # TAKE clears it for a job of its own; an item starts here
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
