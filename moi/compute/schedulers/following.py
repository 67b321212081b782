"""Following a scheduler context's jobs to their end: one status query for all of them, per poll.

Each poll reads the context's worklist (``Pmoi:scheduled:<ctx>``: job id -> scheduler id) and the jobs' infos;
a job removed from moi before it ended has its cluster job cancelled from there. It asks the scheduler about
every submitted one in one command (``squeue``, ``qstat``; one per 1000 ids past that), and moves each on:
pending there (its state and reason in the ``scheduler`` field), Running, or ended. An ended job's own exit file
says Success or Failed (a Python job's outcome file, its value or traceback); a job the scheduler ended (TIMEOUT,
OUT_OF_MEMORY, NODE_FAIL ...) or that vanished from it without an exit code is Failed with that reason (the
scheduler's accounting tells it, where the adapter reads one, at most ``MOST_REASONS_PER_POLL`` per poll; the exit
file and the accounting are waited for a little, since either may show late). A cancel asked in moi (the job's
cancel flag) is passed on (``scancel``, ``qdel``); the job is Cancelled once the scheduler shows it ended. While
the cluster cannot be reached, jobs keep their state; past the context's ``grace`` they fail. A job whose
scheduler id is not one fails alone, and so does one left SUBMITTING without an id (its hand-over cut short).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from moi.compute.schedulers import script
from moi.compute.schedulers.adapters import ENDED, RUNNING, Seen, is_scheduler_id
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
SUBMITTING_WAIT = 300.0  # seconds a job left SUBMITTING without a scheduler id is waited for before it fails
MOST_REASONS_PER_POLL = 10  # accounting look-ups (qacct: up to 20 s each) per poll; the other jobs wait a poll
REASON_AGAIN = 10.0  # seconds before a job's accounting that said nothing is read again (qmaster flushes every 15 s)
REASONS_KEPT = 600.0  # seconds an accounting answer is remembered


class Follow:
    """One poll over a context's jobs."""

    def __init__(self, hand: Hand) -> None:
        self.hand = hand
        self.store = hand.store
        self._reasons_left = MOST_REASONS_PER_POLL
        self._reasons: dict[str, tuple[float, str]] = {}  # scheduler id -> when its accounting was read, what it said

    @property
    def _worklist(self) -> str:
        return self.store.keys.scheduled(self.hand.spec.name)

    def jobs(self) -> list[Info]:
        """The context's jobs handed to its scheduler and not yet ended (the worklist: ended ones leave it, and
        removed ones too, once their cluster jobs are cancelled)."""
        with reaching(self.store.url):
            worklist: dict[str, str] = self.store.redis.hgetall(self._worklist)
        infos = self.store.get_many(sorted(worklist))
        present = {info["id"] for info in infos}
        gone = {job_id: scheduler_id for job_id, scheduler_id in worklist.items() if job_id not in present}
        forgotten = [info["id"] for info in infos if is_finished(info)] + self._cancel_removed(gone)
        if forgotten:
            with reaching(self.store.url):
                self.store.redis.hdel(self._worklist, *forgotten)
        return [self._adopted(info, worklist[info["id"]]) for info in infos if not is_finished(info)]

    def poll(self, jobs: list[Info]) -> dict[str, int]:
        """Ask the scheduler about ``jobs`` (SchedulerUnavailable when it cannot be asked), and move each on.
        How many are pending and running there now."""
        self._pass_on_cancels(jobs)
        self._reasons_left = MOST_REASONS_PER_POLL
        followed = self._followed(jobs)
        seen = self.hand.adapter.poll(self.hand.runner, sorted(followed)) if followed else {}
        counts = {"pending": 0, "running": 0}
        for scheduler_id, infos in followed.items():
            for info in infos:  # two jobs of one scheduler id (a copied document): each followed
                with item(self.store, "scheduler poller", f"job {info['id']}", log):
                    phase = self._move_on(info, seen.get(scheduler_id))
                    if phase in counts:
                        counts[phase] += 1
        return counts

    def _followed(self, jobs: list[Info]) -> dict[str, list[Info]]:
        """The jobs to ask the scheduler about, by scheduler id. One whose id is not one fails (sent, it would
        make squeue refuse the whole command: every job read as vanished); one without an id for long, too."""
        followed: dict[str, list[Info]] = {}
        for info in jobs:
            scheduler_id = _scheduler_id(info)
            with item(self.store, "scheduler poller", f"job {info['id']}", log):
                if not scheduler_id:
                    self._check_submitting(info)
                elif not is_scheduler_id(scheduler_id):
                    shown = printable(scheduler_id, 40)
                    reason = f"Its scheduler id '{shown}' is not one (plain digits): moi did not write it"
                    self.hand.end(info, Status.FAILED, reason, "text", {"state": "BAD_ID"})
                else:
                    followed.setdefault(scheduler_id, []).append(info)
        return followed

    def _cancel_removed(self, gone: dict[str, str]) -> list[str]:
        """Jobs removed from moi before they ended: their cluster jobs cancelled (else they run to their walltime,
        counted in no quota), in one command; the ids to forget. While the cluster cannot be reached, those
        with a cluster job are kept, to be cancelled at a later poll."""
        orphans = sorted({scheduler_id for scheduler_id in gone.values() if is_scheduler_id(scheduler_id)})
        if orphans:
            try:
                self.hand.adapter.cancel(self.hand.runner, orphans)
            except SchedulerUnavailable as error:
                log.warning("removed jobs' cluster jobs of %s not cancelled yet: %s", self.hand.spec.name, error)
                return [job_id for job_id, scheduler_id in gone.items() if not is_scheduler_id(scheduler_id)]
            log.info("cancelled %s on %s: their jobs were removed from moi", ", ".join(orphans), self.hand.spec.name)
        return list(gone)

    def _find_named(self, name: str) -> str:
        """The scheduler id of the job named ``name`` there, where the adapter can look it up; "" if not found."""
        find = getattr(self.hand.adapter, "find_named", None)
        return str(find(self.hand.runner, name)) if find is not None else ""

    def _adopted(self, info: Info, scheduler_id: str) -> Info:
        """A job whose scheduler id reached the worklist but not its info (moi stopped between): it noted there."""
        if scheduler_id and not _scheduler_id(info):
            return self.hand.note(info["id"], info, {"id": scheduler_id, "state": "SUBMITTED", "submitted": now()})
        return info

    def _check_submitting(self, info: Info) -> None:
        """A job SUBMITTING with no scheduler id: its hand-over was cut short (moi stopped in the middle). Noted
        when first seen; ``SUBMITTING_WAIT`` seconds later, looked up there by its name (Slurm) and followed if
        found, else failed, naming what to look for on the cluster."""
        scheduler = info.get("scheduler") or {}
        if scheduler.get("state") != "SUBMITTING":
            return
        since = scheduler.get("stuck_since")
        if not isinstance(since, int | float):
            self.hand.note(info["id"], info, {"stuck_since": time.time()})
            return
        if time.time() - since >= SUBMITTING_WAIT:
            name = script.job_name(info["id"])
            found = self._find_named(name)
            if found:  # it did reach the scheduler: followed from now on
                with reaching(self.store.url):
                    self.store.redis.hset(self._worklist, info["id"], found)
                self._adopted(info, found)
                return
            reason = (
                f"Its hand-over to the scheduler was cut short and no scheduler id came back: it may have reached"
                f" the scheduler as {name}; look for that name there ({self.hand.adapter.kind}) and cancel it"
            )
            self.hand.end(info, Status.FAILED, reason, "text", {"state": "LOST"})

    def fail_stranded(self, jobs: list[Info], reason: str) -> None:
        """Jobs whose cluster has been out of reach past the grace period: Failed, saying so."""
        for info in jobs:
            with item(self.store, "scheduler poller", f"job {info['id']}", log):
                self.hand.end(info, Status.FAILED, reason, "text", {"state": "UNREACHABLE"})

    def _pass_on_cancels(self, jobs: list[Info]) -> None:
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
            known = seen.failure if seen is not None and seen.failure else self._ended_reason(info)
            if known is None or not known and seen is None and self._traces_may_come(info):
                return  # asked again at the next poll
            why = known
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

    def _ended_reason(self, info: Info) -> str | None:
        """Why a job without an exit code ended, from its scheduler's accounting (adapters that keep one); ""
        when not known; None when not asked this poll (``MOST_REASONS_PER_POLL`` asked already: it waits a poll).
        An answer is remembered: "" is asked again only after ``REASON_AGAIN`` seconds, a reason never."""
        reason_of = getattr(self.hand.adapter, "ended_reason", None)
        if reason_of is None:
            return ""
        scheduler_id, moment = _scheduler_id(info), time.monotonic()
        asked = self._reasons.get(scheduler_id)
        if asked is not None and (asked[1] or moment - asked[0] < REASON_AGAIN):
            return asked[1]
        if self._reasons_left <= 0:
            return None
        self._reasons_left -= 1
        reason = str(reason_of(self.hand.runner, scheduler_id))
        self._reasons = {key: one for key, one in self._reasons.items() if moment - one[0] < REASONS_KEPT}
        self._reasons[scheduler_id] = (moment, reason)
        return reason

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
        fields.update(self._status_text(directory))
        outcome = self._outcome(directory)
        if outcome is None:
            reason = f"The job's Python ended with exit code {exit_code} and no outcome; its log says why"
            self.hand.end(info, Status.FAILED, reason + "\n" + self._tail(directory), "text", fields)
            return
        status = Status.SUCCESS if outcome.get("status") == "Success" else Status.FAILED
        result, result_format = outcome.get("result"), str(outcome.get("result_format") or "text")
        self.hand.end(info, status, result, result_format, fields, str(outcome.get("value") or ""))

    def _status_text(self, directory: str) -> dict[str, str]:
        """The last ``status_update`` text the job's function wrote there (``status_text``), if any."""
        try:
            text = self._read(directory, [script.STATE_DIR, script.STATUS], 1000, at_end=False)
        except OSError:
            return {}
        shown = printable(text.decode("utf-8", "replace"), 1000)
        return {"status_text": shown} if shown else {}

    def _exit_code(self, directory: str) -> int | None:
        try:
            text = self._read(directory, [script.STATE_DIR, script.EXIT], 64, at_end=False).decode().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.lstrip("-").isdigit() else None

    def _outcome(self, directory: str) -> dict[str, Any] | None:
        try:
            outcome = json.loads(self._read(directory, [script.STATE_DIR, script.OUTCOME], MOST_OUTCOME, at_end=False))
        except (OSError, ValueError):
            return None
        return outcome if isinstance(outcome, dict) else None

    def _tail(self, directory: str) -> str:
        try:
            return self._read(directory, [script.LOG], TAIL, at_end=True).decode("utf-8", "replace")
        except OSError:
            return ""

    def _read(self, directory: str, names: list[str], most: int, at_end: bool) -> bytes:
        """At most ``most`` bytes of a file in the job's directory (its last ones, ``at_end``), opened without
        following a link below that directory: the job's own code may have left one (framework.log -> a file
        of moi's), and what is read here becomes its result."""
        opened = self.hand.runner.open_file(directory, names)
        try:
            return opened.read(max(0, opened.size - most) if at_end else 0, most)
        finally:
            opened.close()

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
