"""A chain of command-line steps: the ``run`` of a service defined in YAML.

Each step is a job of its own, a child of the service job in the tree, so the
page shows the chain moving. A step starts when the steps it comes ``after``
(by default the one before it in the list) have succeeded; steps after the same
one run side by side (a fan-out), and a step after several waits for them all
(a fan-in). Every step runs on the service job's engine, in its directory, with
its output in ``steps/<name>.stdout`` and ``.stderr``. Its exit code means
``success``, ``failed`` or ``done`` (stop the chain; the job succeeds) by its
``exit_codes`` rules; missing ``outputs`` mean ``fail``, ``terminate`` or ``continue``.
When a step fails the job fails, and the steps not run end Cancelled, saying why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moi.compute import engine, time_limits
from moi.compute.text_jobs import end_process_group
from moi.core.errors import JobCancelled, ServiceDefinitionError, StepFailed
from moi.core.info import Info, Status, is_finished, new_id, new_info, now

SUCCESS, FAILED, DONE = "success", "failed", "done"
MISSING_ACTIONS = ("fail", "terminate", "continue")
STEPS_DIR = "steps"
TAIL = 2000  # characters of a failed step's stderr kept in its result
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A step's name is a file name in steps/ (its .stdout and .stderr): letters, digits, '_', '-' and '.', no '..'
_STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_EXIT_CODE = re.compile(r"-?[0-9]{1,9}")  # ASCII digits: str.isdigit passes '²', which int() then refuses


@dataclass(frozen=True)
class Step:
    name: str
    run: str
    after: tuple[str, ...] | None = None  # None: the step before it
    exit_codes: Mapping[str, str] = field(default_factory=lambda: {"0": SUCCESS, "other": FAILED})
    outputs: tuple[str, ...] = ()
    missing: str = "fail"

    def meaning(self, code: int) -> str:
        return self.exit_codes.get(str(code), self.exit_codes.get("other", FAILED))

    def command(self, params: Mapping[str, Any]) -> str:
        """The command line with each ``{param}`` replaced by its value, shell-quoted (other braces stay)."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            return shlex.quote(str(params[name])) if name in params else match.group(0)

        return _PLACEHOLDER.sub(value, self.run)


def step_from(document: Any, index: int) -> Step:
    """A step from its YAML mapping; ServiceDefinitionError saying what is wrong."""
    if not isinstance(document, Mapping) or not isinstance(document.get("run"), str):
        raise ServiceDefinitionError(f"step {index + 1} needs a 'run' command line")
    name = str(document.get("name") or f"step{index + 1}")
    unknown = set(document) - {"name", "run", "after", "exit_codes", "outputs", "missing"}
    if unknown:
        raise ServiceDefinitionError(f"step {name!r} has unknown keys {sorted(unknown)}")
    codes = {str(code): str(meaning) for code, meaning in (document.get("exit_codes") or {0: SUCCESS}).items()}
    codes.setdefault("other", FAILED)
    bad = {meaning for meaning in codes.values()} - {SUCCESS, FAILED, DONE}
    if bad or not all(code == "other" or _EXIT_CODE.fullmatch(code) for code in codes):
        raise ServiceDefinitionError(f"step {name!r}: exit_codes map codes (or 'other') to success, failed or done")
    missing = str(document.get("missing", "fail"))
    if missing not in MISSING_ACTIONS:
        raise ServiceDefinitionError(f"step {name!r}: missing is {missing!r}; use one of {MISSING_ACTIONS}")
    after = document.get("after")
    return Step(
        name=name,
        run=document["run"],
        after=None if after is None else _strings(after),
        exit_codes=codes,
        outputs=_strings(document.get("outputs")),
        missing=missing,
    )


def _strings(value: Any) -> tuple[str, ...]:
    """One string or a list of them (YAML lets either be written), as a tuple."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(item) for item in value)


def step_document(step: Step) -> dict[str, Any]:
    """The inverse of ``step_from``: what ``moi services dump`` writes."""
    document: dict[str, Any] = {"name": step.name, "run": step.run}
    if step.after is not None:
        document["after"] = list(step.after)
    codes = {(int(code) if code != "other" else code): meaning for code, meaning in step.exit_codes.items()}
    if codes != {0: SUCCESS, "other": FAILED}:
        document["exit_codes"] = codes
    if step.outputs:
        document["outputs"] = list(step.outputs)
    if step.missing != "fail":
        document["missing"] = step.missing
    return document


def check_chain(steps: Sequence[Step]) -> dict[str, tuple[str, ...]]:
    """Each step's prerequisites; ServiceDefinitionError for a duplicate, unknown or later one, or for a name or
    an output that would leave the job directory (checked when a service is loaded and again on the engine)."""
    needs: dict[str, tuple[str, ...]] = {}
    for index, step in enumerate(steps):
        _check_places(step)
        if step.name in needs:
            raise ServiceDefinitionError(f"two steps are named {step.name!r}")
        after = step.after if step.after is not None else ((steps[index - 1].name,) if index else ())
        for name in after:
            if name not in needs:
                raise ServiceDefinitionError(f"step {step.name!r} comes after {name!r}, which is not a step before it")
        needs[step.name] = after
    return needs


def _check_places(step: Step) -> None:
    if not isinstance(step.name, str) or not _STEP_NAME.fullmatch(step.name) or ".." in step.name:
        raise ServiceDefinitionError(f"step {str(step.name)[:80]!r}: its name is letters, digits, _, - and . (no '..')")
    for pattern in step.outputs:
        if not inside_directory(pattern):
            raise ServiceDefinitionError(f"step {step.name!r}: output {pattern[:80]!r} is not inside the job directory")


def inside_directory(pattern: str) -> bool:
    """Whether a path or glob names something inside the job directory: relative, with no '..' part."""
    return bool(pattern) and not os.path.isabs(pattern) and "\x00" not in pattern and ".." not in pattern.split("/")


# on the engine -----------------------------------------------------------------------------


class Chain:
    """Runs a service job's steps on its engine; each step a child job whose state is written as it moves."""

    def __init__(self, steps: Sequence[Step], params: Mapping[str, Any], directory: str) -> None:
        self.steps = {step.name: step for step in steps}
        self.needs = check_chain(steps)
        self.params = params
        self.directory = directory
        self.store, info = engine.current_job()
        self.job_id, self.context = info["id"], info.get("context")
        self.ttl = self.store.ttl_of(info)
        self.nodes: dict[str, Info] = {}  # step name -> its info as last written
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.ended: dict[str, str] = {}  # step name -> success, failed or done

    def run(self) -> dict[str, str]:
        """Every step, in order; what became of each. StepFailed when one failed."""
        os.makedirs(os.path.join(self.directory, STEPS_DIR), exist_ok=True)
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

    def _loop(self) -> str:
        """Start what is ready, wait for one to end, until all did; the reason the chain stopped early."""
        delay = 0.0005
        while len(self.ended) < len(self.steps):
            for name in self._ready():
                self._start(name)
            if len(self.running) == 1:  # one at a time: wait on it (a cancel's signal interrupts the wait)
                next(iter(self.running.values())).wait()
            ended = [(name, proc) for name, proc in self.running.items() if proc.poll() is not None]
            if not ended:
                time.sleep(delay)  # polled, not waited on: a cancel interrupts a sleep, a fan-out needs many
                delay = min(delay * 2, 0.05)
                continue
            delay = 0.0005
            for name, proc in ended:
                del self.running[name]
                time_limits.command_ended(proc.pid)
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

    def _start(self, name: str) -> None:
        step = self.steps[name]
        info = new_info(new_id(), name, "job", "", context=self.context)
        info.update(pubsub=self.store.keys.channel(info["id"]), status=Status.RUNNING, date_start=now())
        info.update(engine=engine.engine_label(), step=name, ttl=self.ttl)
        self.store.add_under(self.job_id, [info], ttl=self.ttl)
        self.nodes[name] = info
        out = os.path.join(self.directory, STEPS_DIR, name)
        with open(out + ".stdout", "wb") as stdout, open(out + ".stderr", "wb") as stderr:
            self.running[name] = subprocess.Popen(
                step.command(self.params),
                shell=True,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group: a cancel ends all it started
            )
        time_limits.command_started(self.running[name].pid)  # a soft time limit sends it SIGTERM

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
            f.seek(max(0, f.tell() - TAIL))
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
                info = new_info(new_id(), name, "job", "", context=self.context)
                info.update(pubsub=self.store.keys.channel(info["id"]), step=name, ttl=self.ttl)
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
