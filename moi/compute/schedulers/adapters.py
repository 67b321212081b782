"""Per batch scheduler: its directives, its submit, its one batched status query, its cancel.

Each adapter runs its scheduler's own commands through a ``Runner`` (here, or on a login node over SSH).
moi renders the directives itself rather than through PSI/J or DRMAA: their executors run their commands on
this machine and read the job's files from it, and a cluster over SSH shares no filesystem with moi; the few
commands per scheduler are simpler to own than to wrap (docs/schedulers.md says more).

``poll`` answers, for the scheduler ids asked, what the scheduler shows of each (``Seen``); an id it no longer
shows is left out (the poller then reads the job's exit file, or calls it vanished). A scheduler that cannot be
asked at all raises ``SchedulerUnavailable``; a job it refuses raises ``SchedulerRefused`` with its message.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from moi.compute.schedulers.runner import Ran, Runner
from moi.core.errors import SchedulerRefused, SchedulerUnavailable
from moi.core.resources import Resources, clock

PENDING, RUNNING, ENDED = "pending", "running", "ended"


@dataclass(frozen=True)
class Seen:
    """One job as its scheduler shows it: its own state word, why it waits, and what that means to moi."""

    state: str
    reason: str = ""
    phase: str = PENDING
    failure: str = ""  # ended by the scheduler (TIMEOUT, OUT_OF_MEMORY ...); "": its exit file tells
    cancelled: bool = False


class Adapter(Protocol):
    kind: str

    def directives(self, name: str, log: str, directory: str, resources: Resources) -> list[str]: ...

    def submit(self, runner: Runner, script: str) -> str: ...

    def poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]: ...

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None: ...


def adapter_for(kind: str) -> Adapter:
    adapters: dict[str, type[Adapter]] = {"slurm": Slurm, "sge": GridEngine, "local": LocalProcess}
    return adapters[kind]()


def _submitted(ran: Ran, command: str, pattern: str) -> str:
    if not ran.ok:
        raise SchedulerRefused(f"{command} refused the job: {ran.problem()}")
    found = re.search(pattern, ran.stdout)
    if found is None:
        raise SchedulerRefused(f"{command} gave no job id: {ran.problem()}")
    return found.group(1)


# Slurm ---------------------------------------------------------------------------------------

_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SUSPENDED", "SIGNALING", "RESIZING"}
_SLURM_OWN_END = {"COMPLETED", "FAILED"}  # the job's own exit: its exit file tells Success or Failed
_SLURM_ENDS = {"TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}


class Slurm:
    kind = "slurm"

    def directives(self, name: str, log: str, directory: str, resources: Resources) -> list[str]:
        lines = [f"--job-name={name}", f"--output={log}", "--open-mode=append", f"--chdir={directory}"]
        for key, flag in (("cores", "--cpus-per-task"), ("nodes", "--nodes"), ("partition", "--partition")):
            if key in resources:
                lines.append(f"{flag}={resources[key]}")
        if "account" in resources:
            lines.append(f"--account={resources['account']}")
        if "memory" in resources:
            lines.append(f"--mem={resources['memory']}M")
        if "walltime" in resources:
            lines.append(f"--time={_slurm_time(int(resources['walltime']))}")
        if resources.get("gpus"):
            lines.append(f"--gres=gpu:{resources['gpus']}")
        return [f"#SBATCH {line}" for line in lines]

    def submit(self, runner: Runner, script: str) -> str:
        return _submitted(runner.run(["sbatch", "--parsable", script]), "sbatch", r"^\s*(\d+)")

    def poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]:
        argv = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%r", f"--jobs={','.join(ids)}"]
        ran = runner.run(argv)
        if not ran.ok:
            if "Invalid job id" in ran.stderr:
                return {}  # none of them is known any more
            raise SchedulerUnavailable(f"squeue failed on {runner.where}: {ran.problem()}")
        seen = {}
        for line in ran.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in ids:
                seen[parts[0]] = _slurm_seen(parts[1], parts[2])
        return seen

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None:
        runner.run(["scancel", *ids])


def _slurm_time(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days}-{clock(rest)}" if days else clock(rest)


def _slurm_seen(state: str, reason: str) -> Seen:
    state = state.split()[0] if state.strip() else "UNKNOWN"
    reason = "" if reason in ("None", "(null)") else reason
    if state in _SLURM_RUNNING:
        return Seen(state, reason, RUNNING)
    if state in _SLURM_OWN_END:
        return Seen(state, reason, ENDED)
    if state == "CANCELLED":
        return Seen(state, reason, ENDED, cancelled=True)
    if state in _SLURM_ENDS:
        return Seen(state, reason, ENDED, failure=state)
    return Seen(state, reason, PENDING)


# Grid Engine -----------------------------------------------------------------------------------

PARALLEL_ENVIRONMENT = "smp"  # the parallel environment a job with cores > 1 asks for (-pe smp N)


class GridEngine:
    kind = "sge"

    def directives(self, name: str, log: str, directory: str, resources: Resources) -> list[str]:
        lines = [f"-N {name}", f"-o {log}", "-j y", f"-wd {directory}", "-S /bin/sh"]
        cores = int(resources.get("cores", 1))
        if cores > 1:
            lines.append(f"-pe {PARALLEL_ENVIRONMENT} {cores}")
        if "memory" in resources:  # h_vmem is per slot
            lines.append(f"-l h_vmem={max(1, int(resources['memory']) // cores)}M")
        if "walltime" in resources:
            lines.append(f"-l h_rt={clock(int(resources['walltime']))}")
        if "partition" in resources:
            lines.append(f"-q {resources['partition']}")
        if "account" in resources:
            lines.append(f"-A {resources['account']}")
        if resources.get("gpus"):
            lines.append(f"-l gpu={resources['gpus']}")
        return [f"#$ {line}" for line in lines]

    def submit(self, runner: Runner, script: str) -> str:
        return _submitted(runner.run(["qsub", "-terse", script]), "qsub", r"^\s*(\d+)")

    def poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]:
        ran = runner.run(["qstat", "-xml"])
        if not ran.ok:
            raise SchedulerUnavailable(f"qstat failed on {runner.where}: {ran.problem()}")
        return {job_id: seen for job_id, seen in qstat_xml(ran.stdout).items() if job_id in ids}

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None:
        runner.run(["qdel", *ids])


def qstat_xml(text: str) -> dict[str, Seen]:
    """``qstat -xml``'s jobs: id -> what moi makes of its state letters (qw, hqw, r, t, dr, Eqw ...)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise SchedulerUnavailable(f"qstat -xml gave no XML: {error}") from None
    seen = {}
    for job in root.iter("job_list"):
        number, letters = job.findtext("JB_job_number", ""), job.findtext("state", "")
        if number:
            seen[number.strip()] = _sge_seen(letters.strip())
    return seen


def _sge_seen(letters: str) -> Seen:
    if "E" in letters:
        return Seen(letters, "error state", ENDED, failure=f"Grid Engine error state {letters}")
    if "d" in letters:
        return Seen(letters, "being deleted", RUNNING)
    if "r" in letters or "t" in letters:
        return Seen(letters, "", RUNNING)
    return Seen(letters, "held" if "h" in letters else "", PENDING)


# a process on the host ---------------------------------------------------------------------------

_START = 'setsid sh "$1" >> "$2" 2>&1 < /dev/null & echo $!'


class LocalProcess:
    """No scheduler: the job's script runs as a process of its own session on the host (ids are pids)."""

    kind = "local"

    def directives(self, name: str, log: str, directory: str, resources: Resources) -> list[str]:
        return [f"# moi job {name}; its output goes to {log}"]

    def submit(self, runner: Runner, script: str) -> str:
        log = script.rsplit("/", 2)[0] + "/framework.log"
        return _submitted(runner.run(["sh", "-c", _START, "moi", script, log]), "sh", r"^\s*(\d+)")

    def poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]:
        ran = runner.run(["ps", "-o", "pid=,stat=", "-p", ",".join(pid for pid in ids if pid.isdigit())])
        seen = {}
        for line in ran.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ids and not parts[1].startswith("Z"):
                seen[parts[0]] = Seen("RUNNING", "", RUNNING)
        return seen

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None:
        # Each job's whole process group; "--" first, or kill would read "-PID" as an option (-1: every process).
        groups = [f"-{pid}" for pid in ids if pid.isdigit() and int(pid) > 1]
        if groups:
            runner.run(["kill", "-s", "TERM", "--", *groups])
