"""The watchdog: no job stays Running after its engine died.

It works from Redis alone, whatever the cluster. An engine running a job
keeps the job's heartbeat key alive (see ``moi.compute.engine``); a job in the
running set whose heartbeat has been gone for ``GRACE`` seconds (as seen by
this watchdog, so a Redis restart that dropped the keys is not mistaken for a
death) is marked Failed, "engine lost"; one marked idempotent that has attempts left is queued again
instead, as its next attempt (in its context's retry set, after its backoff: see ``moi.queue.retries``),
the lost attempt's "Engine lost" line kept in its ``attempts``. Its old engine, should it come back,
can no longer write it (``moi.compute.attempts``). Queued jobs need no watching: they
wait in moi's queue in Redis, whatever happens to the cluster. Every write
is a compare-and-set that leaves finished jobs alone, so any number of
watchdogs may run at once: the embedded runtime's supervisor, ``moi server``,
a blocking ``moi submit --block`` and ``moi watchdog`` each run one (its pass,
with the upkeep that rides on it, is ``moi.upkeep.passes``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from moi.compute import attempts
from moi.compute.context import key_digest
from moi.compute.heartbeats import HEARTBEAT_TTL, heartbeat_ttl
from moi.core.errors import MoiError
from moi.core.info import Info, Status, is_finished, now
from moi.core.policy import attempts_left
from moi.core.redact import printable
from moi.storage import loops
from moi.storage.redis_errors import reaching
from moi.storage.store import Change, Store

log = logging.getLogger("moi.watchdog")

INTERVAL = 2.0  # seconds between two passes
GRACE = 3.0  # a heartbeat must stay missing this long before the job is failed
PROBE_TIMEOUT = 1.0
# From an engine's death to its job marked Failed, when a watchdog runs (with the default heartbeat life: one
# shortened by MOI_HEARTBEAT_TTL, as the tests' engines have, is failed sooner).
ENGINE_LOST_WITHIN = HEARTBEAT_TTL + GRACE + 2 * INTERVAL
_WRITTEN, _REFUSED, _SKIPPED = "written", "refused", "skipped"  # how a watchdog's write went


class Watchdog:
    """One watcher over one Redis; call ``check`` every ``INTERVAL`` seconds."""

    def __init__(self, store: Store, grace: float = GRACE) -> None:
        self.store = store
        self.grace = grace
        self._silent: dict[str, float] = {}  # running job -> when its heartbeat was first seen missing
        self.passes = 0

    def check(self) -> list[str]:
        """One pass; the ids of the jobs it failed."""
        return self._check_running()

    # running jobs -------------------------------------------------------------

    def _check_running(self) -> list[str]:
        keys, client = self.store.keys, self.store.redis
        with reaching(self.store.url):
            ids = sorted(client.smembers(keys.running))
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.exists(keys.heartbeat(job_id))
            beating = pipe.execute() if ids else []
        infos = {info["id"]: info for info in self.store.get_many(ids)}
        _forget_others(self._silent, ids)
        failed, done = [], []
        moment = time.monotonic()
        for job_id, alive in zip(ids, beating, strict=True):
            with loops.item(self.store, "watchdog", f"job {printable(job_id)}", log):  # one job cannot stop the pass
                info = infos.get(job_id)
                if info is None or is_finished(info):
                    done.append(job_id)
                elif isinstance(info.get("scheduler"), dict):
                    continue  # handed to a batch scheduler: its context's poller follows it, not a heartbeat
                elif _overdue(self._silent, job_id, bool(alive), moment, self.grace):
                    if self._fail(info, _engine_lost(info)):
                        failed.append(job_id)
                    done.append(job_id)
        if done:
            with reaching(self.store.url):
                client.srem(keys.running, *done)
        return failed

    # -------------------------------------------------------------------------

    def _fail(self, info: Info, reason: str) -> bool:
        """Mark an unfinished job Failed, or queue it again as its next attempt when it is idempotent and has
        attempts left (``reason`` kept with the lost attempt); whether this watchdog failed it."""
        job_id = info["id"]
        ended = {"result": reason, "result_format": "text", "date_end": now()}
        if _redelivered(self.store, info) and self._queue_again(info, ended) != _REFUSED:
            return False  # queued again, or no longer this watchdog's to do
        outcome, _ = self._write(info, attempts.guarded(_failed(ended), job_id, info.get("attempt")), [])
        if outcome != _WRITTEN:
            return False
        log.warning("job %s failed: %s", printable(job_id), printable(reason, limit=400))
        self._fail_steps(info, reason)
        return True

    def _queue_again(self, info: Info, ended: Info) -> str:
        """The job queued again as its next attempt: _WRITTEN; _REFUSED when it must fail instead (its cancel
        was asked meanwhile, or no retry can be made of its info); _SKIPPED when it is not this watchdog's."""
        job_id, keys = info["id"], self.store.keys
        retry = attempts.next_attempt_write(keys, job_id, info, ended, self.store.ttl_of(info))
        if retry is None:
            return _REFUSED
        change, also = retry
        also += [["DEL", keys.heartbeat(job_id)], ["SREM", keys.running, job_id]]
        try:
            outcome, new = self._write(info, change, also, keys.cancel(job_id))
        except Exception as error:  # the retry's change could not be made of the info: it fails instead
            log.error("job %s: its next attempt cannot be queued (%s); it fails", printable(job_id), error)
            return _REFUSED
        if outcome == _WRITTEN:
            log.warning("job %s queued again as attempt %s: %s", printable(job_id), new.get("attempt"), ended["result"])
            self._fail_steps(info, str(ended["result"]))
        return outcome

    def _write(
        self, info: Info, change: Change, also: list[list[str | int]], unless_key: str | None = None
    ) -> tuple[str, Info]:
        """``change`` written, compare-and-set: _WRITTEN by this watchdog, _REFUSED (``unless_key`` exists),
        or _SKIPPED (nothing to change, or Redis away); with the info as it now stands."""
        made: list[Info | None] = []

        def counted(current: Info) -> Info | None:
            made[:] = [change(current)]  # the last attempt is the one that counted
            return made[0]

        try:
            new = self.store.update(info["id"], counted, info, also=also, unless_key=unless_key)
        except MoiError as error:
            log.warning("could not fail job %s: %s", printable(info["id"]), error)
            return _SKIPPED, info
        if not made or made[0] is None:
            return _SKIPPED, new
        return (_WRITTEN if new is made[0] else _REFUSED), new  # update returns the change's own dict once written

    def _fail_steps(self, info: Info, reason: str) -> None:
        """A service job's steps ran on the same engine: they were lost with it."""
        if info.get("steps"):
            for step in self.store.descendant_jobs(info["id"]):
                if not is_finished(step):
                    self._fail(step, reason)


def _failed(ended: Info) -> Change:
    def change(current: Info) -> Info | None:
        if is_finished(current):
            return None  # it finished meanwhile: that state is final
        current.update(status=Status.FAILED, date_end=now(), **{k: ended[k] for k in ("result", "result_format")})
        return current

    return change


def _redelivered(store: Store, info: Info) -> bool:
    """Whether a job whose engine was lost runs again: it is idempotent, has attempts left, and no cancel
    of it was asked for."""
    return bool(info.get("idempotent")) and attempts_left(info) and not attempts.cancel_asked(store, info["id"])


def _overdue(suspects: dict[str, float], job_id: str, alive: bool, moment: float, grace: float) -> bool:
    """True once a job has looked dead for ``grace`` seconds in a row, as this watchdog saw it."""
    if alive:
        suspects.pop(job_id, None)
        return False
    return moment - suspects.setdefault(job_id, moment) >= grace


def _forget_others(suspects: dict[str, float], current: list[str]) -> None:
    for job_id in set(suspects) - set(current):
        del suspects[job_id]


def _engine_lost(info: Info) -> str:
    engine = info.get("engine") or "its engine"
    return (
        f"Engine lost: {engine} stopped sending heartbeats for over {heartbeat_ttl()}s "
        "(the engine died, or could not reach Redis); the job did not finish"
    )


def controller_alive(entry: dict[str, Any]) -> bool:
    """Whether the controller a job was queued in still answers and is the same one."""
    address = urlsplit(str(entry.get("registration") or ""))
    if not address.port:
        return True  # nothing to probe: never fail a job on a guess
    if not _same_controller(entry):
        return False
    host = address.hostname if address.hostname not in (None, "*", "0.0.0.0") else "127.0.0.1"
    try:
        with socket.create_connection((host, address.port), timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def controller_listening(url_file: str | None) -> bool:
    """Whether the controller a connection file names answers; True when there is nothing to probe."""
    if not url_file:
        return True
    try:
        with open(url_file) as handle:
            config = json.load(handle)
        registration = config["registration"]
        if isinstance(registration, int):  # the file keeps the port and the interface apart
            registration = f"{config.get('interface') or 'tcp://127.0.0.1'}:{registration}"
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False  # no file (yet), or not one a controller wrote: no controller to reach there
    return controller_alive({"registration": str(registration), "file": ""})


def _same_controller(entry: dict[str, Any]) -> bool:
    """False only when the connection file now names a different controller."""
    path = entry.get("file")
    if not path or not os.path.exists(path):
        return True
    try:
        with open(path) as handle:
            key = str(json.load(handle).get("key") or "")
    except (OSError, ValueError, AttributeError):
        return True
    return key_digest(key) == entry.get("identity")
