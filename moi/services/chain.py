"""A service's chain of steps on its engine: each step a child job whose state is written as it moves.

What a chain is, and how a step is defined, is ``moi.services.steps``. Here each step's command runs in
the job directory, in a process group of its own (a cancel, or its time limit, ends all it started),
its output in ``steps/<name>.stdout`` and ``.stderr``. A step with ``retries`` whose exit code means
``failed`` runs again while it has tries left (its info shows ``attempt``, ``max_attempts`` and the
earlier ``attempts``, as a job's does); a step past its ``time_limit`` (counted from its first try) is
ended, SIGTERM then SIGKILL, and fails "Time limit of 5m exceeded", which fails the job.

Each step's node carries the attempt of the service job it ran in (``job_attempt``; its own ``attempt`` is
its own tries'): the next attempt of a retried job removes the nodes of the others, so its page shows its own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from moi.compute import engine, time_limits
from moi.compute.text_jobs import end_process_group
from moi.core.errors import JobCancelled, StepFailed
from moi.core.info import Info, Status, is_finished, new_id, new_info, now
from moi.core.policy import time_limit_reason
from moi.services import steps
from moi.services.steps import DONE, FAILED, STEPS_DIR, SUCCESS, Step, check_chain, inside_directory
from moi.storage.redis_errors import reaching
from moi.storage.store import Store, message

JOB_ATTEMPT = "job_attempt"  # on a step's node: the attempt of its service job it ran in


class Chain:
    """Runs a service job's steps on its engine; each step a child job whose state is written as it moves."""

    def __init__(self, steps: Sequence[Step], params: Mapping[str, Any], directory: str) -> None:
        self.steps = {step.name: step for step in steps}
        self.needs = check_chain(steps)
        self.params = params
        self.directory = directory
        self.store, info = engine.current_job()
        self.job_id, self.context, self.attempt = info["id"], info.get("context"), info.get("attempt")
        self.ttl = self.store.ttl_of(info)
        self.nodes: dict[str, Info] = {}  # step name -> its info as last written
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.ended: dict[str, str] = {}  # step name -> success, failed or done
        self.tries: dict[str, int] = {}  # step name -> runs of its command so far
        self.deadlines: dict[str, float] = {}  # step name -> when (time.monotonic) its time limit passes

    def run(self) -> dict[str, str]:
        """Every step, in order; what became of each. StepFailed when one failed."""
        os.makedirs(os.path.join(self.directory, STEPS_DIR), exist_ok=True)
        self._forget_earlier_attempts()
        try:
            stopped = self._loop()
        except BaseException as error:
            with engine.shielded():
                why = "Cancelled with the service job" if isinstance(error, JobCancelled) else f"Cancelled: {error}"
                self._end_the_rest(why)
            raise
        if stopped:
            self._end_the_rest(stopped)
        return dict(self.ended)

    def _forget_earlier_attempts(self) -> None:
        """A retried job's steps of its earlier attempts, removed from the tree: the page shows this one's.
        Told apart by the attempt each node carries, not by its times (its engines' clocks may differ)."""
        if not isinstance(self.attempt, int) or self.attempt <= 1:
            return
        nodes = self.store.get_many(sorted(self.store.children(self.job_id)))
        earlier = [node["id"] for node in nodes if node.get("step") and node.get(JOB_ATTEMPT) != self.attempt]
        if earlier:
            remove_steps(self.store, self.job_id, earlier)

    def _node(self, name: str) -> Info:
        """A new node of step ``name`` in this attempt of the job, not yet stored."""
        info = new_info(new_id(), name, "job", "", context=self.context)
        info.update(pubsub=self.store.keys.channel(info["id"]), step=name, ttl=self.ttl)
        if self.attempt is not None:
            info[JOB_ATTEMPT] = self.attempt
        return info

    def _loop(self) -> str:
        """Start what is ready, wait for one to end, until all did; the reason the chain stopped early."""
        delay = 0.0005
        while len(self.ended) < len(self.steps):
            for name in self._ready():
                self._start(name)
            if len(self.running) == 1:  # one at a time: wait on it (a cancel's signal interrupts the wait)
                self._wait_on(next(iter(self.running)))
            self._end_overdue()
            ended = [(name, proc) for name, proc in self.running.items() if proc.poll() is not None]
            if not ended:
                time.sleep(delay)  # polled, not waited on: a cancel interrupts a sleep, a fan-out needs many
                delay = min(delay * 2, 0.05)
                continue
            delay = 0.0005
            for name, proc in ended:
                del self.running[name]
                time_limits.command_ended(proc.pid)
                if self._again(name, proc.returncode):
                    continue
                meaning = self._finish(name, proc.returncode)
                if meaning == FAILED:
                    raise StepFailed(f"step {name!r} failed: {self.nodes[name]['result']['reason']}")
                if meaning == DONE:
                    return f"Not run: step {name!r} ended the chain ({self.nodes[name]['result']['reason']})"
        return ""

    def _ready(self) -> list[str]:
        return [
            name
            for name, needs in self.needs.items()
            if name not in self.ended and name not in self.running and all(self.ended.get(n) == SUCCESS for n in needs)
        ]

    def _wait_on(self, name: str) -> None:
        """Wait for the one running step to end, or for its time limit to pass."""
        deadline = self.deadlines.get(name)
        with contextlib.suppress(subprocess.TimeoutExpired):  # past its limit: _end_overdue ends it
            self.running[name].wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _end_overdue(self) -> None:
        """StepFailed for a step still running past its time limit, its process group ended first."""
        moment = time.monotonic()
        for name, proc in list(self.running.items()):
            deadline = self.deadlines.get(name)
            if deadline is None or moment < deadline or proc.poll() is not None:
                continue
            end_process_group(proc)
            del self.running[name]
            time_limits.command_ended(proc.pid)
            reason = time_limit_reason({"time_limit": steps.time_limit_of(self.steps[name])})
            self._write(name, Status.FAILED, {"exit_code": proc.returncode, "outcome": FAILED, "reason": reason})
            self.ended[name] = FAILED
            raise StepFailed(f"step {name!r} failed: {reason}")

    def _start(self, name: str) -> None:
        """A step's first try: its node in the tree, Running, and its command started."""
        info = self._node(name)
        info.update(status=Status.RUNNING, date_start=now(), engine=engine.engine_label())
        if self.steps[name].retries:
            info.update(attempt=1, max_attempts=self.steps[name].retries + 1)
        self.store.add_under(self.job_id, [info], ttl=self.ttl)
        self.nodes[name] = info
        limit = steps.time_limit_of(self.steps[name])
        if limit is not None:
            self.deadlines[name] = time.monotonic() + limit
        self._spawn(name)

    def _spawn(self, name: str) -> None:
        """Run the step's command (again), its output in ``steps/<name>.std*`` (a new try's replaces the last's)."""
        self.tries[name] = self.tries.get(name, 0) + 1
        out = os.path.join(self.directory, STEPS_DIR, name)
        with open(out + ".stdout", "wb") as stdout, open(out + ".stderr", "wb") as stderr:
            self.running[name] = subprocess.Popen(
                self.steps[name].command(self.params),
                shell=True,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group: a cancel ends all it started
            )
        time_limits.command_started(self.running[name].pid)  # a soft time limit sends it SIGTERM

    def _again(self, name: str, code: int) -> bool:
        """Whether a step whose command failed runs it again: its exit code means failed and it has tries left."""
        step = self.steps[name]
        if step.meaning(code) != FAILED or self.tries[name] > step.retries:
            return False
        ended = {
            "attempt": self.tries[name],
            "engine": self.nodes[name].get("engine"),
            "date_start": self.nodes[name].get("date_start"),
            "date_end": now(),
            "result": f"exit code {code} means {FAILED}{self._stderr_tail(name)}",
            "result_format": "text",
        }

        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None
            info.update(attempt=self.tries[name] + 1, attempts=[*(info.get("attempts") or []), ended], date_start=now())
            return info

        self.nodes[name] = engine.retrying(
            lambda: self.store.update(self.nodes[name]["id"], change, self.nodes[name]), f"recording step {name}"
        )
        self._spawn(name)
        return True

    def _finish(self, name: str, code: int) -> str:
        step = self.steps[name]
        meaning = step.meaning(code)
        reason = f"exit code {code} means {meaning}"
        if meaning != FAILED:
            missing = [pattern for pattern in step.outputs if not self._found(pattern)]
            if missing and step.missing != "continue":
                meaning = FAILED if step.missing == "fail" else DONE
                reason = f"its outputs {missing} are missing ({step.missing})"
        if meaning == FAILED:
            reason += self._stderr_tail(name)
        result = {"exit_code": code, "outcome": meaning, "reason": reason}
        status = Status.FAILED if meaning == FAILED else Status.SUCCESS
        self._write(name, status, result)
        self.ended[name] = meaning
        return meaning

    def _found(self, pattern: str) -> bool:
        """Whether an output is there: a match inside the job directory (a link out of it does not count)."""
        top = os.path.realpath(self.directory)
        matches = glob.glob(os.path.join(self.directory, pattern)) if inside_directory(pattern) else []
        return any(os.path.realpath(match).startswith(top + os.sep) for match in matches)

    def _stderr_tail(self, name: str) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.directory, STEPS_DIR, name + ".stderr"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - steps.TAIL))
            tail = f.read().decode("utf-8", "replace").strip()
            return f"; stderr ends: {tail}" if tail else ""
        return ""

    def _end_the_rest(self, why: str) -> None:
        """Stop the running steps; write every step not ended as Cancelled with ``why``."""
        for name, proc in list(self.running.items()):
            end_process_group(proc)
            del self.running[name]
            time_limits.command_ended(proc.pid)
        for name in self.steps:
            if name in self.ended:
                continue
            if name not in self.nodes:
                info = self._node(name)
                info.update(status=Status.CANCELLED, result=why, result_format="text", date_end=now())
                self.store.add_under(self.job_id, [info], ttl=self.ttl)
                self.nodes[name] = info
            else:
                self._write(name, Status.CANCELLED, why)
            self.ended[name] = "cancelled"

    def _write(self, name: str, status: Status, result: Any) -> None:
        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None
            info.update(status=status, result=result, result_format="json", date_end=now())
            return info

        self.nodes[name] = engine.retrying(
            lambda: self.store.update(self.nodes[name]["id"], change, self.nodes[name]), f"recording step {name}"
        )


def run_command(command: str | Sequence[str], directory: str) -> subprocess.CompletedProcess[bytes]:
    """A Python service's ``run`` command, in the job directory, its output in ``steps/run.std*``."""
    os.makedirs(os.path.join(directory, STEPS_DIR), exist_ok=True)
    out = os.path.join(directory, STEPS_DIR, "run")
    with open(out + ".stdout", "wb") as stdout, open(out + ".stderr", "wb") as stderr:
        proc = subprocess.Popen(
            command,
            shell=isinstance(command, str),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            with time_limits.process_group(proc.pid):  # a soft time limit sends it SIGTERM
                proc.wait()  # a cancel's signal (or asynchronous exception) interrupts it
        except BaseException:
            with engine.shielded():
                end_process_group(proc)
            raise
    return subprocess.CompletedProcess(command, proc.returncode)


def remove_steps(store: Store, job_id: str, step_ids: list[str]) -> None:
    """The steps of a run that failed, gone from the tree (and from the page) before it runs again
    (a resubmit, or the job's next attempt)."""
    pipe = store.redis.pipeline(transaction=True)
    pipe.delete(*[store.keys.info(step) for step in step_ids])
    pipe.srem(store.keys.children(job_id), *step_ids)
    pipe.publish(store.keys.channel(job_id), message("remove", step_ids))
    with reaching(store.url):
        pipe.execute()
