"""Following a scheduler context's jobs to their end: one status query for all of them, per poll.

Each poll reads the context's worklist (``Pmoi:scheduled:<ctx>``) and the jobs' infos, asks the scheduler about
every submitted one in one command (``squeue``, ``qstat``), and moves each on: pending there (its state and
reason in the ``scheduler`` field), Running, or ended. An ended job's own exit file says Success or Failed (a
Python job's outcome file, its value or traceback); a job the scheduler ended (TIMEOUT, OUT_OF_MEMORY,
NODE_FAIL ...) or that vanished from it without an exit code is Failed with that reason (the scheduler's
accounting tells it, where the adapter reads one; the exit file and the accounting are waited for a little, since
either may show late). A cancel asked in moi
(the job's cancel flag) is passed on (``scancel``, ``qdel``); the job is Cancelled once the scheduler shows it
ended. While the cluster cannot be reached, jobs keep their state; past the context's ``grace`` they fail.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from moi.compute.schedulers import script
from moi.compute.schedulers.adapters import ENDED, RUNNING, Seen
from moi.compute.schedulers.fetching import bring_home
from moi.compute.schedulers.handing import Hand
from moi.core.errors import PathRefused, SchedulerUnavailable
from moi.core.info import Info, Status, is_finished, now
from moi.core.redact import printable
from moi.jobfiles.directory import directory_of
from moi.storage.loops import item
from moi.storage.redis_errors import reaching

log = logging.getLogger("moi.schedulers")

TAIL = 16 * 1024  # bytes of a shell job's output kept as its result
MOST_OUTCOME = 8 << 20  # bytes of a Python job's outcome file read back
VANISHED_WAIT = 30.0  # seconds a job gone from its scheduler is given for its exit file or its accounting to show


class Follow:
    """One poll over a context's jobs."""

    def __init__(self, hand: Hand) -> None:
        self.hand = hand
        self.store = hand.store

    def jobs(self) -> list[Info]:
        """The context's jobs handed to its scheduler and not yet ended (the worklist; ended ones leave it)."""
        keys = self.store.keys
        with reaching(self.store.url):
            ids = sorted(self.store.redis.smembers(keys.scheduled(self.hand.spec.name)))
        infos = self.store.get_many(ids)
        ended = [info["id"] for info in infos if is_finished(info)]
        gone = set(ids) - {info["id"] for info in infos}
        if ended or gone:
            with reaching(self.store.url):
                self.store.redis.srem(keys.scheduled(self.hand.spec.name), *ended, *gone)
        return [info for info in infos if not is_finished(info)]

    def poll(self, jobs: list[Info]) -> dict[str, int]:
        """Ask the scheduler about ``jobs`` (SchedulerUnavailable when it cannot be asked), and move each on.
        How many are pending and running there now."""
        submitted = {str(info["scheduler"]["id"]): info for info in jobs if _scheduler_id(info)}
        self._pass_on_cancels(jobs, submitted)
        seen = self.hand.adapter.poll(self.hand.runner, sorted(submitted)) if submitted else {}
        counts = {"pending": 0, "running": 0}
        for scheduler_id, info in submitted.items():
            with item(self.store, "scheduler poller", f"job {info['id']}", log):
                phase = self._move_on(info, seen.get(scheduler_id))
                if phase in counts:
                    counts[phase] += 1
        return counts

    def fail_stranded(self, jobs: list[Info], reason: str) -> None:
        """Jobs whose cluster has been out of reach past the grace period: Failed, saying so."""
        for info in jobs:
            with item(self.store, "scheduler poller", f"job {info['id']}", log):
                self.hand.end(info, Status.FAILED, reason, "text", {"state": "UNREACHABLE"})

    def _pass_on_cancels(self, jobs: list[Info], submitted: dict[str, Info]) -> None:
        keys = self.store.keys
        with reaching(self.store.url):
            pipe = self.store.redis.pipeline(transaction=False)
            for info in jobs:
                pipe.exists(keys.cancel(info["id"]))
            asked = [info for info, flag in zip(jobs, pipe.execute(), strict=True) if flag]
        to_cancel = [str(info["scheduler"]["id"]) for info in asked if _scheduler_id(info)]
        if to_cancel:
            self.hand.adapter.cancel(self.hand.runner, to_cancel)
        for info in asked:
            if not _scheduler_id(info):  # never got to the scheduler: nothing there to stop
                self.hand.end(info, Status.CANCELLED, "Cancelled before it started", "text", {"state": "CANCELLED"})

    def _move_on(self, info: Info, seen: Seen | None) -> str:
        """One job moved on by what the scheduler shows of it (None: nothing any more); its phase now."""
        if seen is None or seen.phase == ENDED:
            self._ended(info, seen)
            return ENDED
        fields = {"state": seen.state, "reason": seen.reason}
        if seen.phase == RUNNING and info["status"] == Status.QUEUED:
            self._started(info, fields)
        else:
            self.hand.note(info["id"], info, fields)
        return seen.phase

    def _started(self, info: Info, fields: dict[str, Any]) -> None:
        def change(current: Info) -> Info | None:
            if current["status"] != Status.QUEUED:
                return None
            current.update(status=Status.RUNNING, date_start=now())
            current["scheduler"] = {**(current.get("scheduler") or {}), **fields}
            return current

        self.store.update(info["id"], change, info)

    def _ended(self, info: Info, seen: Seen | None) -> None:
        directory = self.hand.directory(info["id"], info)
        state = seen.state if seen is not None else "GONE"
        exit_code = self._exit_code(directory)
        cancelled = seen is not None and seen.cancelled or exit_code is None and self._cancel_asked(info["id"])
        why = ""
        if exit_code is None and not cancelled:
            why = seen.failure if seen is not None and seen.failure else self._ended_reason(info)
            if not why and seen is None and self._traces_may_come(info):
                return  # asked again at the next poll
        fields: dict[str, Any] = {"state": state, "reason": seen.reason if seen is not None else ""}
        fields.update(exit_code=exit_code, **self._fetched(info, directory))
        if cancelled:
            self.hand.end(info, Status.CANCELLED, "Cancelled while running", "text", fields)
        elif exit_code is None:
            self.hand.end(info, Status.FAILED, _ended_by_scheduler(why, state, self.hand.adapter.kind), "text", fields)
        elif info.get("cmd_type") == "system":
            status = Status.SUCCESS if exit_code == 0 else Status.FAILED
            self.hand.end(info, status, self._shell_result(directory, exit_code), "text", fields)
        else:
            self._python_ended(info, directory, exit_code, fields)

    def _fetched(self, info: Info, directory: str) -> dict[str, Any]:
        """``fetch = on-end``: the job's files brought home before its end is written; what its info says of it."""
        if not (self.hand.spec.remote and self.hand.spec.fetch == "on-end"):
            return {}
        try:
            bring_home(self.hand.runner, directory, directory_of(info["id"], info), info["id"])
        except Exception as error:  # noqa: BLE001 - whatever it was, the job still ends; its files stay there
            log.warning("job %s: its files were not brought home: %s", info["id"], printable(str(error)))
            return {"fetch_error": _fetch_problem(error)}
        return {"fetched": now()}

    def _ended_reason(self, info: Info) -> str:
        """Why a job without an exit code ended, from its scheduler's accounting (adapters that keep one)."""
        reason_of = getattr(self.hand.adapter, "ended_reason", None)
        return str(reason_of(self.hand.runner, _scheduler_id(info))) if reason_of is not None else ""

    def _traces_may_come(self, info: Info) -> bool:
        """A job gone from its scheduler, with no exit file and no reason yet: both may come late (a shared
        filesystem shows a file late; Grid Engine writes its accounting every 15 s). Noted as gone, it is
        waited for up to ``VANISHED_WAIT`` seconds."""
        gone = (info.get("scheduler") or {}).get("gone")
        if not isinstance(gone, int | float):
            self.hand.note(info["id"], info, {"gone": time.time()})
            return True
        return time.time() - gone < getattr(self.hand.adapter, "vanished_wait", VANISHED_WAIT)

    def _python_ended(self, info: Info, directory: str, exit_code: int, fields: dict[str, Any]) -> None:
        outcome = self._outcome(directory)
        if outcome is None:
            reason = f"The job's Python ended with exit code {exit_code} and no outcome; its log says why"
            self.hand.end(info, Status.FAILED, reason + "\n" + self._tail(directory), "text", fields)
            return
        status = Status.SUCCESS if outcome.get("status") == "Success" else Status.FAILED
        result, result_format = outcome.get("result"), str(outcome.get("result_format") or "text")
        self.hand.end(info, status, result, result_format, fields, str(outcome.get("value") or ""))

    def _exit_code(self, directory: str) -> int | None:
        try:
            text = self.hand.runner.read_file(script.path(directory, script.EXIT), 0, 64).decode().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.lstrip("-").isdigit() else None

    def _outcome(self, directory: str) -> dict[str, Any] | None:
        try:
            data = self.hand.runner.read_file(script.path(directory, script.OUTCOME), 0, MOST_OUTCOME)
            outcome = json.loads(data)
        except (OSError, ValueError):
            return None
        return outcome if isinstance(outcome, dict) else None

    def _tail(self, directory: str) -> str:
        path = f"{directory}/{script.LOG}"
        try:
            size = next((entry.size for entry in self.hand.runner.list_files(directory) if entry.path == script.LOG), 0)
            return self.hand.runner.read_file(path, max(0, size - TAIL), TAIL).decode("utf-8", "replace")
        except OSError:
            return ""

    def _shell_result(self, directory: str, exit_code: int) -> str:
        tail = self._tail(directory)
        if exit_code == 0:
            return tail
        return f"The command exited with code {exit_code}. The end of its output:\n{tail}"

    def _cancel_asked(self, job_id: str) -> bool:
        with reaching(self.store.url):
            return bool(self.store.redis.exists(self.store.keys.cancel(job_id)))


def _scheduler_id(info: Info) -> str:
    scheduler = info.get("scheduler")
    return str(scheduler.get("id") or "") if isinstance(scheduler, dict) else ""


def _ended_by_scheduler(failure: str, state: str, kind: str) -> str:
    if failure:
        return f"Ended by the scheduler: {failure}"
    if state == "GONE":
        return f"The job vanished from the scheduler ({kind}) without an exit code: its node was lost, or it was killed"
    return f"Ended by the scheduler ({state}) without an exit code"


def _fetch_problem(error: Exception) -> str:
    """Why a job's files did not come home, for its info (its users read it): the kind of trouble, without
    the cluster's account, key or any path (those are in the log)."""
    if isinstance(error, SchedulerUnavailable):
        return "the cluster could not be reached; `moi files fetch` tries again"
    if isinstance(error, PathRefused):
        return "a symbolic link is in the way in its directory here"
    if isinstance(error, OSError):
        return f"a file could not be copied: {printable(error.strerror or type(error).__name__, 80)}"
    return f"the copy failed ({type(error).__name__}); the server's log says why"
