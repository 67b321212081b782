"""Handing one queued job to its batch scheduler: its files written there, then its script submitted.

The poller has taken the job from moi's queue (still Queued, registered as taken: ``Queue.take(still_queued=True)``).
Here the job's info first gains its ``scheduler`` field (``SUBMITTING``), and the context's worklist the job (its
scheduler id "" until it has one), so that the engines' watchdog leaves it to the poller; then its directory is
made there, its inputs staged (over SFTP when the cluster shares no filesystem), its script written and submitted.
The scheduler's id goes into the info at once, and into the worklist first, on its own: a restart of moi finds it
there and goes on following the job, and a job removed meanwhile still has its cluster job cancelled.

A cluster that cannot be reached gives the job back to moi's queue, at its old place (``Queue.release``). A job the
scheduler refuses fails, with the scheduler's own message as its result; so does one that cannot be handed over
for any other reason (it would otherwise stay SUBMITTING, followed by nothing).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from moi.compute.schedulers import script
from moi.compute.schedulers.adapters import Adapter
from moi.compute.schedulers.runner import LocalRunner, Runner
from moi.core.errors import RedisUnavailable, SchedulerRefused, SchedulerUnavailable, UnknownId
from moi.core.info import Info, Status, is_finished, now
from moi.core.scheduler_settings import SchedulerSpec
from moi.jobfiles.directory import directory_of
from moi.queue.jobqueue import Queue, Taken, batch_of, item_arguments, unpack_call
from moi.storage.loops import one_line
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.schedulers")

MOST_STAGED = 1 << 30  # bytes of inputs staged to a cluster per job


class Hand:
    """What handing a job needs: the context, where its scheduler is, and moi's store."""

    def __init__(self, store: Store, spec: SchedulerSpec, adapter: Adapter, runner: Runner) -> None:
        self.store, self.spec, self.adapter, self.runner = store, spec, adapter, runner

    def directory(self, job_id: str, info: Info) -> str:
        """Where the job runs: ``<workdir>/<id>`` on a cluster over SSH; moi's own job directory here."""
        if self.spec.remote:
            return f"{self.spec.workdir.rstrip('/')}/{job_id}"
        host = info.get("runs_in")  # a service job's run on the scheduler: in that job's own directory
        if isinstance(host, str) and host:
            return directory_of(host, self.store.get(host))
        return directory_of(job_id, info)

    def submit(self, taken: Taken) -> Info:
        """The job submitted; its info as it now stands. SchedulerUnavailable: nothing changed there.
        SchedulerRefused (or anything else going wrong): the job is Failed here, with the reason."""
        job_id = taken.info["id"]
        info = self.note(job_id, taken.info, {"state": "SUBMITTING"}, also=[["HSET", self._worklist, job_id, ""]])
        directory = self.directory(job_id, info)
        try:
            self._write_files(info, taken.call, directory)
            scheduler_id = self.adapter.submit(self.runner, script.path(directory, script.SCRIPT))
        except (SchedulerUnavailable, RedisUnavailable):  # the job waits: given back, or found again
            raise
        except SchedulerRefused as error:
            return self.end(info, Status.FAILED, str(error), "text", {"state": "REFUSED"})
        except OSError as error:  # the workdir cannot be written
            reason = f"its directory {directory} cannot be written on {self.runner.where}: {error}"
            return self.end(info, Status.FAILED, reason, "text", {"state": "REFUSED"})
        except Exception as error:  # a command that cannot be written (a lone surrogate ...): failed, not stuck
            reason = f"The job could not be handed to its scheduler: {one_line(error)}"
            return self.end(info, Status.FAILED, reason, "text", {"state": "REFUSED"})
        log.info("job %s submitted to %s as %s", job_id, self.spec.name, scheduler_id)
        with reaching(self.store.url):  # first, on its own: a job removed meanwhile still has its id cancelled
            self.store.redis.hset(self._worklist, job_id, scheduler_id)
        try:
            return self.note(job_id, info, {"id": scheduler_id, "state": "SUBMITTED", "submitted": now()})
        except UnknownId:  # removed while it was handed over: the next poll cancels it there
            return info

    def give_back(self, taken: Taken, label: str, reason: str) -> None:
        """A job taken but not submitted (its cluster could not be reached): back in moi's queue, Queued, with
        the reason shown; its scheduler field gone, so that nothing follows it but the queue."""
        job_id = taken.info["id"]

        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None
            info.pop("scheduler", None)
            info["waiting"] = reason
            return info

        self.store.update(job_id, change, also=[["HDEL", self._worklist, job_id]])
        Queue(self.store).release(self.spec.name, label, [taken])

    def note(self, job_id: str, info: Info, fields: dict[str, Any], also: list[list[str | int]] | None = None) -> Info:
        """The job's ``scheduler`` field with ``fields`` over it (and ``also`` with the write), unless it ended."""

        def change(current: Info) -> Info | None:
            if is_finished(current):
                return None
            seen = dict(current.get("scheduler") or {"kind": self.adapter.kind, "where": self.runner.where})
            if all(seen.get(name) == value for name, value in fields.items()):
                return None
            seen.update(fields)
            current["scheduler"] = seen
            current.pop("waiting", None)
            return current

        return self.store.update(job_id, change, info, also=also or [])

    def end(
        self, info: Info, status: Status, result: Any, result_format: str, fields: dict[str, Any], value: str = ""
    ) -> Info:
        """The job's final state, out of the worklist and the taken set; its ``value`` (pickled) kept beside."""
        job_id, keys = info["id"], self.store.keys
        also: list[list[str | int]] = [["HDEL", self._worklist, job_id], ["SREM", keys.running, job_id]]
        also.append(["DEL", keys.heartbeat(job_id), keys.cancel(job_id)])
        if value:
            also.append(["SET", keys.value(job_id), value, "EX", self.store.ttl])

        def change(current: Info) -> Info | None:
            if is_finished(current):
                return None
            seen = dict(current.get("scheduler") or {"kind": self.adapter.kind})
            seen.update(fields)
            current.update(status=status, result=result, result_format=result_format, date_end=now(), scheduler=seen)
            current.pop("waiting", None)
            return current

        return self.store.update(job_id, change, info, also=also)

    @property
    def _worklist(self) -> str:
        return self.store.keys.scheduled(self.spec.name)

    def _write_files(self, info: Info, call: str, directory: str) -> None:
        """The job's directory there: its inputs (when moi's copy is not the same place), its command or call,
        and its script."""
        runner = self.runner
        runner.make_dirs(f"{directory}/{script.STATE_DIR}")
        for stale in (script.EXIT, script.OUTCOME):  # an earlier run's, in a directory runs share, is not this one's
            runner.write_file(script.path(directory, stale), b"")
        if self.spec.remote:
            self._stage_inputs(info, directory)
        shell = info.get("cmd_type") == "system"
        if shell:
            runner.write_file(script.path(directory, script.COMMAND), _command_of(call).encode())
        else:
            self._write_call(call, directory)
        name, log_path = script.job_name(info["id"]), f"{directory}/{script.LOG}"
        directives = self.adapter.directives(name, log_path, directory, info.get("resources") or {})
        python = None if shell else (self.spec.python or "python3")
        text = script.script(directives, directory, python)
        runner.write_file(script.path(directory, script.SCRIPT), text.encode(), mode=0o700)

    def _write_call(self, call: str, directory: str) -> None:
        """A Python job's packed call; a batch item's is its batch's call, and its own arguments beside it."""
        batch_id = batch_of(call)
        if batch_id is None:
            self.runner.write_file(script.path(directory, script.CALL), call.encode())
            return
        shared = Queue(self.store).call_of(batch_id)
        if shared is None:
            raise SchedulerRefused(f"the call of its batch {batch_id} is gone (expired or removed)")
        self.runner.write_file(script.path(directory, script.CALL), shared.encode())
        self.runner.write_file(script.path(directory, script.ITEM), call.encode())

    def _stage_inputs(self, info: Info, directory: str) -> None:
        """The inputs moi holds for the job (its directory here), copied to its directory there."""
        local = directory_of(info["id"], info)
        if not os.path.isdir(local):
            return
        staged = 0
        for entry in LocalRunner().list_files(local):
            staged += entry.size
            if staged > MOST_STAGED:
                raise SchedulerRefused(f"the job's inputs are over {MOST_STAGED >> 20} MiB; stage them yourself")
            data = LocalRunner().read_file(os.path.join(local, entry.path))
            self.runner.write_file(f"{directory}/{entry.path}", data)


def _command_of(call: str) -> str:
    """A shell job's command: its call's first argument (a batch item's own)."""
    if batch_of(call) is not None:
        args: tuple[Any, ...] = item_arguments(call)
        kwargs: dict[str, Any] = {}
    else:
        _, args, kwargs, _ = unpack_call(call)
    return str(kwargs.get("cmd", args[0] if args else ""))
