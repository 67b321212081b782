"""Time limits on the engine: when a job's soft and hard limits pass, and what its engine does then.

A limit is measured from the job's start on its engine (a batch item's, from its own start) and enforced
there, by the engine's one beater thread (``moi.compute.engine``), at each beat: so it holds with the
submitter long gone, fires up to ``HEARTBEAT_INTERVAL`` late, and never fires for a job that has ended.

- **Soft limit**: ``JobSoftTimeLimit`` is raised in the job's function, once; it may catch it and end in
  time. Uncaught, the job fails "Soft time limit of 10m exceeded". While the job runs shell commands in
  process groups of their own (``system_call``, a Python service's ``run`` command, a service's steps),
  they get SIGTERM instead, and the job no exception: a command may trap it and finish; what it exits
  with decides.
- **Hard limit**: ``JobTimeLimit`` (a ``JobCancelled``) is raised in the job's function, as a cancel is, so
  ``system_call`` ends its command's process group (SIGTERM, then SIGKILL); the job ends Failed, "Time
  limit of 15m exceeded" (a job that caught it and returned fails so too), and the engine takes its next job.
- ``GRACE`` seconds after the hard limit, a job whose function still runs (it caught ``JobTimeLimit``
  and went on, or its thread waits in C code that released the GIL) is recorded Failed, with a note that
  its engine was stopped, and the engine process ends (``os._exit``): a cluster that replaces its engines
  (the embedded runtime's does) starts a new one.
- A thread stuck in C code that holds the GIL stops the beater too: nothing inside the process can act
  then. Its heartbeat stops with it, so the watchdog fails the job as engine-lost (or queues it again,
  if it is idempotent) within ``moi.compute.watchdog.ENGINE_LOST_WITHIN`` seconds, as for an engine that died.

A time limit's failure is retried as any failure is, when ``retry_on`` allows it (its name there is
``JobTimeLimit``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moi.core.policy import shown, time_limit_reason

log = logging.getLogger("moi.engine")

GRACE = 10.0  # seconds a job's function may go on past its hard limit before its engine is stopped
STOPPED_ENGINE_EXIT = 75  # the exit status of an engine stopped for a job that would not end

SOFT, HARD, ABANDON = "soft", "hard", "abandon"


@dataclass
class Deadlines:
    """One job's limits on this engine, in seconds from ``started`` (``time.monotonic()``)."""

    hard: float | None
    soft: float | None
    started: float = 0.0
    warned: bool = False  # the soft limit's warning went out
    interrupted: bool = False  # the hard limit's interrupt went out
    abandoned: bool = False  # the engine gave the job up

    @classmethod
    def of(cls, info: dict[str, Any] | None, started: float) -> Deadlines | None:
        """The limits ``info`` carries; None for a job without any (nothing to watch: a plain job costs nothing)."""
        hard, soft = _seconds((info or {}).get("time_limit")), _seconds((info or {}).get("soft_time_limit"))
        if hard is None and soft is None:
            return None
        return cls(hard, soft, started)

    def due(self, moment: float) -> str | None:
        """What the engine owes the job at ``moment``: SOFT or HARD (until it went out), ABANDON (once)."""
        elapsed = moment - self.started
        if self.hard is not None and elapsed >= self.hard:
            if elapsed >= self.hard + GRACE:
                return None if self.abandoned else ABANDON
            return None if self.interrupted else HARD
        if self.soft is not None and not self.warned and elapsed >= self.soft:
            return SOFT
        return None

    def reason(self, soft: bool = False) -> str:
        """The one line the job fails with."""
        return time_limit_reason({"time_limit": self.hard, "soft_time_limit": self.soft}, soft)

    def abandoned_reason(self, label: str) -> str:
        """The line the job fails with when its engine ``label`` was stopped for it."""
        return (
            f"{self.reason()}; the job went on for {shown(GRACE)} after it was interrupted, "
            f"so its engine {label} was stopped"
        )


def _seconds(value: Any) -> float | None:
    """A limit as the info holds it, in seconds; None for none, or for a value that is no duration above zero
    (one written behind moi's back: NaN, infinity, text), which is not enforced."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


# The process groups of the shell commands each job's thread runs (thread id -> process group ids).
_groups_by_thread: dict[int, set[int]] = {}


@contextmanager
def process_group(pgid: int) -> Iterator[None]:
    """While the current job's shell command runs in its own process group: a soft limit sends it SIGTERM."""
    command_started(pgid)
    try:
        yield
    finally:
        command_ended(pgid)


def command_started(pgid: int) -> None:
    """The job of this thread runs a command in process group ``pgid`` (see ``process_group``)."""
    _groups_by_thread.setdefault(threading.get_ident(), set()).add(pgid)


def command_ended(pgid: int) -> None:
    """The command in process group ``pgid`` of this thread's job has ended (see ``process_group``)."""
    groups = _groups_by_thread.get(threading.get_ident())
    if groups is not None:
        groups.discard(pgid)
        if not groups:
            _groups_by_thread.pop(threading.get_ident(), None)


def groups_of(thread_id: int) -> list[int]:
    """The process groups of the commands the job of ``thread_id`` runs now."""
    return list(_groups_by_thread.get(thread_id, ()))


def terminate_groups(groups: Iterable[int]) -> None:
    """SIGTERM to each of a job's commands' process groups (the soft limit's warning to a shell command)."""
    for pgid in list(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):  # that group has ended already
            os.killpg(pgid, signal.SIGTERM)


def stop_engine(job_id: str, reason: str) -> None:
    """End this engine's process at once: a job's function would not stop (see ``GRACE``)."""
    log.error("job %s: %s; this engine exits now", job_id, reason)
    for handler in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(STOPPED_ENGINE_EXIT)
