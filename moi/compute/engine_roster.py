"""Engines as workers: which engine of a context is which process, what it runs, and how much it ran.

The leading dispatcher of a context (``moi.compute.dispatch``) asks each engine it has
not met who it is (``host:pid``, one small task) and records it in
``moi:workers:<ctx>``; an engine its cluster no longer lists is marked lost
there, and forgotten an hour later. Each engine's ``work`` adds the jobs it
ran to ``moi:workers:done:<ctx>``, at least once a second while it works. What
a worker runs now is read from the heartbeats of the running jobs, which name
their engine: nothing here is on a job's path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import redis

from moi.compute.context import ByName
from moi.compute.engine import engine_label
from moi.core.errors import MoiError
from moi.core.info import Status
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.workers")

FORGET_LOST = 3600.0  # seconds a lost engine stays listed
DONE_EVERY = 1.0  # seconds an engine's count of jobs done may lag while it works


class Roll:
    """The dispatcher's side: who each engine of its cluster is, kept in Redis as it changes.

    Each tick it compares the hash with what it knows (one HGETALL of a few
    entries), so entries lost with a Redis that was emptied come back.
    """

    def __init__(self, store: Store, context: str) -> None:
        self.store, self.context = store, context
        self.known: dict[int, str] = {}  # engine id -> label
        self._asked: dict[int, Any] = {}  # engine id -> the AsyncResult of its "who are you" task

    def refresh(self, client: Any) -> None:
        """Ask new engines who they are; note the answers, engines gone, and entries missing, in Redis."""
        listed = set(client.ids)
        for engine in listed - self.known.keys() - self._asked.keys():
            with contextlib.suppress(Exception):  # an engine that went meanwhile is asked no more
                self._asked[engine] = client[engine].apply_async(ByName(engine_label))
        self._answers()
        gone = {self.known.pop(engine) for engine in self.known.keys() - listed}
        self._reconcile(gone)

    def _answers(self) -> None:
        for engine, task in list(self._asked.items()):
            if not task.ready():
                continue
            del self._asked[engine]
            try:
                self.known[engine] = str(task.get(0))
            except Exception as error:  # asked again on the next tick
                log.debug("engine %s of %s did not say who it is: %s", engine, self.context, error)

    def _reconcile(self, gone: set[str]) -> None:
        """Known engines listed; others (gone, a cluster restarted, another leader's) lost; an hour later, forgotten."""
        key, done_key = self.store.keys.workers(self.context), self.store.keys.workers_done(self.context)
        kept = {label: _parsed(text) for label, text in self.store.redis.hgetall(key).items()}
        notes, forget, moment = {}, [], time.time()
        for engine, label in self.known.items():
            if label not in kept or kept[label].get("lost") is not None:
                notes[label] = _note(label, engine)
        for label, entry in kept.items():
            if label in notes or label in self.known.values():
                continue
            if entry.get("lost") is None and (label in gone or not self._asked):
                notes[label] = _note(label, entry.get("engine"), lost=moment)
            elif isinstance(entry.get("lost"), int | float) and moment - entry["lost"] > FORGET_LOST:
                forget.append(label)
        if notes:
            _write(self.store, key, notes)
        if forget:
            self.store.redis.hdel(key, *forget)
            self.store.redis.hdel(done_key, *forget)


def _write(store: Store, key: str, notes: dict[str, str]) -> None:
    mapping: dict[str | bytes, bytes | float | int | str] = {}
    mapping.update(notes)
    store.redis.hset(key, mapping=mapping)


def _note(label: str, engine: Any, lost: float | None = None) -> str:
    host, _, pid = label.rpartition(":")
    return json.dumps({"engine": engine, "host": host, "pid": int(pid) if pid.isdigit() else None, "lost": lost})


def _parsed(text: str) -> dict[str, Any]:
    try:
        entry = json.loads(text)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


class DoneCounter:
    """The engine's side: the jobs its ``work`` ran, added to its count at most once a second."""

    def __init__(self, store: Store, context: str, label: str) -> None:
        self.store, self.key, self.label = store, store.keys.workers_done(context), label
        self.pending = 0
        self._flushed = time.monotonic()

    def add(self, count: int) -> None:
        self.pending += count
        if time.monotonic() - self._flushed >= DONE_EVERY:
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if not self.pending:
            return
        with contextlib.suppress(MoiError, redis.RedisError):  # a count is not worth failing work for
            with reaching(self.store.url):
                self.store.redis.hincrby(self.key, self.label, self.pending)
            self.pending = 0


# reading ---------------------------------------------------------------------------


def listing(store: Store, contexts: list[str], visible: set[str] | None) -> list[dict[str, Any]]:
    """Every worker of ``contexts``: host, pid, state (idle, busy or lost), the job it runs, and jobs done.

    ``visible``: the owners (group ids) whose job ids may be shown; None shows all (an admin).
    """
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    for context in contexts:
        pipe.hgetall(keys.workers(context))
        pipe.hgetall(keys.workers_done(context))
    pipe.smembers(keys.running)
    with reaching(store.url):
        *per_context, running = pipe.execute()
    running_on = _running_by_engine(store, sorted(running))
    found = []
    for index, context in enumerate(contexts):
        entries, done = per_context[2 * index], per_context[2 * index + 1]
        for label, text in sorted(entries.items()):
            found.append(_worker(context, label, _parsed(text), done, running_on.pop(label, []), visible))
    for label, jobs in sorted(running_on.items()):  # an engine busy since before its dispatcher met it
        context = str(jobs[0].get("context") or "")
        found.append(_worker(context, label, _note_of(label), {}, jobs, visible))
    return found


def _note_of(label: str) -> dict[str, Any]:
    return _parsed(_note(label, None))


def _running_by_engine(store: Store, job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The running jobs' documents by the engine their heartbeat names."""
    if not job_ids:
        return {}
    with reaching(store.url):
        labels = store.redis.mget([store.keys.heartbeat(job_id) for job_id in job_ids])
    infos = {info["id"]: info for info in store.get_many(job_ids)}
    by_engine: dict[str, list[dict[str, Any]]] = {}
    for job_id, label in zip(job_ids, labels, strict=True):
        if label is not None and job_id in infos:
            by_engine.setdefault(label, []).append(infos[job_id])
    return by_engine


def _worker(
    context: str,
    label: str,
    entry: dict[str, Any],
    done: dict[str, str],
    jobs: list[dict[str, Any]],
    visible: set[str] | None,
) -> dict[str, Any]:
    running = [info for info in jobs if info.get("status") != Status.QUEUED] or jobs  # a block's first
    current = running[0] if running else None
    shown = current is not None and (visible is None or current.get("owner") in visible)
    state = "lost" if entry.get("lost") is not None else ("busy" if current is not None else "idle")
    return {
        "context": context,
        "label": label,
        "host": entry.get("host"),
        "pid": entry.get("pid"),
        "engine": entry.get("engine"),
        "state": state,
        "job": current["id"] if shown and current is not None else None,
        "done": int(done.get(label, 0)),
    }
