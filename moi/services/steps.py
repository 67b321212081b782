"""A chain of command-line steps, as defined: the ``run`` of a service defined in YAML (``moi.services.chain``
runs it on the engine).

Each step is a job of its own, a child of the service job in the tree, so the
page shows the chain moving. A step starts when the steps it comes ``after``
(by default the one before it in the list) have succeeded; steps after the same
one run side by side (a fan-out), and a step after several waits for them all
(a fan-in). Every step runs on the service job's engine, in its directory, with
its output in ``steps/<name>.stdout`` and ``.stderr``. Its exit code means
``success``, ``failed`` or ``done`` (stop the chain; the job succeeds) by its
``exit_codes`` rules; missing ``outputs`` mean ``fail``, ``terminate`` or ``continue``.
When a step fails the job fails, and the steps not run end Cancelled, saying why.
A step's ``retries`` runs its command again, up to that many times, while its exit code means ``failed``;
its ``time_limit`` (``5m``) bounds the step, its retries included: its command's process group is then
ended (SIGTERM, then SIGKILL) and the step fails, "Time limit of 5m exceeded".
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moi.core.config import MOST_RETRIES
from moi.core.errors import InvalidValue, ServiceDefinitionError
from moi.core.policy import seconds_of, shown

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
    time_limit: float | None = None  # seconds the step may take, its retries included; None: no limit
    retries: int = 0  # more runs of its command while its exit code means failed

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
    unknown = set(document) - {"name", "run", "after", "exit_codes", "outputs", "missing", "time_limit", "retries"}
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
        time_limit=_step_time_limit(name, document.get("time_limit")),
        retries=step_retries(name, document.get("retries", 0)),
    )


def time_limit_of(step: Step) -> float | None:
    """A step's time limit in seconds (a step made in Python may give it as text, ``5m``)."""
    return _step_time_limit(step.name, step.time_limit)


def _step_time_limit(name: str, given: Any) -> float | None:
    if given is None:
        return None
    try:
        return seconds_of(given, "time_limit")
    except InvalidValue as error:
        raise ServiceDefinitionError(f"step {name!r}: {error}") from None


def step_retries(name: str, given: Any, most: int = MOST_RETRIES) -> int:
    """A step's ``retries``: a whole number from 0 to ``most``; ServiceDefinitionError otherwise."""
    if isinstance(given, bool) or not isinstance(given, int) or not 0 <= given <= most:
        raise ServiceDefinitionError(f"step {name!r}: retries is {given!r}; give a whole number from 0 to {most}")
    return given


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
    if step.time_limit is not None:
        document["time_limit"] = shown(step.time_limit)
    if step.retries:
        document["retries"] = step.retries
    return document


def check_chain(steps: Sequence[Step]) -> dict[str, tuple[str, ...]]:
    """Each step's prerequisites; ServiceDefinitionError for a duplicate, unknown or later one, or for a name or
    an output that would leave the job directory (checked when a service is loaded and again on the engine)."""
    needs: dict[str, tuple[str, ...]] = {}
    for index, step in enumerate(steps):
        _check_places(step)
        time_limit_of(step)  # a step made in Python is checked here, as one read from YAML was
        step_retries(step.name, step.retries)
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
