"""Per batch scheduler: its directives, its submit, its one batched status query, its cancel.

Each adapter runs its scheduler's own commands through a ``Runner`` (here, or on a login node over SSH).
moi renders the directives itself rather than through PSI/J or DRMAA: their executors run their commands on
this machine and read the job's files from it, and a cluster over SSH shares no filesystem with moi; the few
commands per scheduler are simpler to own than to wrap (docs/schedulers.md says more).

``poll`` answers, for the scheduler ids asked, what the scheduler shows of each (``Seen``); an id it no longer
shows is left out (the poller then reads the job's exit file, or calls it vanished). A scheduler that cannot be
asked at all raises ``SchedulerUnavailable``; a job it refuses raises ``SchedulerRefused`` with its message.
An adapter may also have ``find_named(runner, name) -> str``: the id of the job of that name, for a job whose
hand-over was cut short (Slurm's has it); and ``ended_reason(runner, scheduler_id) -> str``: why a job that
vanished without its exit file ended, from the scheduler's accounting ("" when unknown); Grid Engine's has it
(``qacct``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from moi.compute.schedulers import gridengine
from moi.compute.schedulers.runner import COMMAND_TIMEOUT, Ran, Runner
from moi.core.errors import SchedulerRefused, SchedulerUnavailable
from moi.core.resources import Resources, clock

PENDING, RUNNING, ENDED = "pending", "running", "ended"
# Ids per status or cancel command: all ids of a poll in one argument would pass the kernel's limit on one
# argument (128 KiB: some 16,000 ids) and fail every poll. Up to this many jobs, a poll is still one command.
IDS_PER_COMMAND = 1000


def chunks(ids: Sequence[str], size: int = IDS_PER_COMMAND) -> list[Sequence[str]]:
    """``ids`` in runs of at most ``size``, in order."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def is_scheduler_id(text: str) -> bool:
    """Whether ``text`` is a job id as Slurm, Grid Engine and a process have them: plain digits. Any other (a
    document moi did not write) is never sent to the scheduler: squeue would refuse the whole command for it."""
    return text.isascii() and text.isdigit()


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
    vanished_wait = 5.0  # squeue shows an ended job for minutes (MinJobAge): one it no longer shows was lost

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
        seen: dict[str, Seen] = {}
        for some in chunks([one for one in ids if is_scheduler_id(one)]):
            seen.update(self._poll(runner, some))
        return seen

    def _poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]:
        argv = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%r", f"--jobs={','.join(ids)}"]
        ran = _run(runner, argv)
        if not ran.ok:
            if "Invalid job id" in ran.stderr:
                return {}  # none of them is known any more
            raise SchedulerUnavailable(f"squeue failed on {runner.where}: {ran.problem()}")
        wanted, seen = set(ids), {}
        for line in ran.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in wanted:
                seen[parts[0]] = _slurm_seen(parts[1], parts[2])
        return seen

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None:
        for some in chunks([one for one in ids if is_scheduler_id(one)]):
            _run(runner, ["scancel", *some])

    def find_named(self, runner: Runner, name: str) -> str:
        """The id of the one job named ``name`` squeue shows, ended or not ("" for none, or more than one): a job
        whose hand-over was cut short before its id was kept."""
        ran = _run(runner, ["squeue", "--noheader", "--states=all", "--format=%i", f"--name={name}"])
        found = [line.strip() for line in ran.stdout.splitlines() if is_scheduler_id(line.strip())] if ran.ok else []
        return found[0] if len(found) == 1 else ""


def _run(runner: Runner, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> Ran:
    """A scheduler command run; SchedulerUnavailable (one line) when it cannot be started at all (E2BIG ...)."""
    try:
        return runner.run(argv, timeout=timeout)
    except OSError as error:
        raise SchedulerUnavailable(f"{argv[0]} could not be run on {runner.where}: {error}") from None


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
MOST_REASONS_ASKED = 100  # jobs per poll whose ``qstat -j`` (a few KB each: their environment) is read for reasons
ACCOUNTING_TIMEOUT = 20.0  # seconds for ``qacct``, which reads the whole accounting file


class GridEngine:
    """Grid Engine (SGE, Son of Grid Engine, Open Cluster Scheduler): ``qsub``, ``qstat``, ``qdel``, ``qacct``."""

    kind = "sge"

    def __init__(self) -> None:
        self.says_why = True  # False once qstat -j shows its scheduler keeps no reasons (schedd_job_info false)

    def directives(self, name: str, log: str, directory: str, resources: Resources) -> list[str]:
        # -V: the job gets the submitter's environment (PATH, PYTHONPATH ...), as Slurm's jobs do by default
        lines = [f"-N {name}", f"-o {log}", "-j y", f"-wd {directory}", "-S /bin/sh", "-V"]
        if int(resources.get("nodes", 1)) > 1:  # a PE across hosts is each site's own: no name moi could guess
            raise SchedulerRefused("Grid Engine jobs here run on one host (-pe smp): ask for cores, not nodes")
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
        # -w e: a job no queue could ever run is refused now, with Grid Engine's reason, rather than pending forever
        return gridengine.qsub_id(runner.run(["qsub", "-terse", "-w", "e", script]))

    def poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]:
        """One ``qstat -xml`` for every job; one ``qstat -j`` for why the waiting ones wait (and why those in
        error state failed); jobs in error state are deleted, since moi fails them (there they would stay)."""
        ran = _run(runner, ["qstat", "-xml"])  # every job at once, whatever their number
        if not ran.ok:
            raise SchedulerUnavailable(f"qstat failed on {runner.where}: {ran.problem()}")
        wanted = set(ids)
        states = {job_id: letters for job_id, letters in gridengine.job_states(ran.stdout).items() if job_id in wanted}
        seen = {job_id: sge_seen(letters) for job_id, letters in states.items()}
        asked = [job_id for job_id, one in seen.items() if one.phase == ENDED or self.says_why and one.phase == PENDING]
        reasons = self._reasons(runner, sorted(asked, key=_numeric)[:MOST_REASONS_ASKED])
        seen = {job_id: _with_reason(one, reasons.get(job_id, "")) for job_id, one in seen.items()}
        errored = [job_id for job_id, one in seen.items() if one.phase == ENDED]
        if errored:
            self.cancel(runner, errored)
        return seen

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None:
        for some in chunks([one for one in ids if is_scheduler_id(one)]):
            _run(runner, ["qdel", *some])

    def _reasons(self, runner: Runner, ids: Sequence[str]) -> dict[str, str]:
        """Why each of ``ids`` waits or failed, from one ``qstat -j``; {} when it cannot tell (a job may have just
        ended: qstat then names it as missing and still shows the others)."""
        if not ids:
            return {}
        try:
            shown = _run(runner, ["qstat", "-j", ",".join(ids)]).stdout
        except SchedulerUnavailable:
            return {}  # only the reasons are missing: the poll itself went through
        if gridengine.REASONS_OFF in shown:
            self.says_why = False  # from now on only jobs in error state are asked about (their error reason)
        return gridengine.job_reasons(shown)

    def ended_reason(self, runner: Runner, scheduler_id: str) -> str:
        """Why a job that left ``qstat`` without its exit file ended, from ``qacct -j``; "" when not known (yet:
        qmaster writes its accounting every ``flush_time``, 15 s by default)."""
        if not scheduler_id.isdigit():
            return ""
        try:
            ran = _run(runner, ["qacct", "-j", scheduler_id], ACCOUNTING_TIMEOUT)
        except SchedulerUnavailable:
            return ""
        return gridengine.ended_reason(ran.stdout) if ran.ok else ""


def sge_seen(letters: str) -> Seen:
    """What moi makes of a job's state letters in ``qstat`` (``qw``, ``hqw``, ``r``, ``t``, ``dr``, ``Eqw`` ...)."""
    if "E" in letters:
        return Seen(letters, "error state", ENDED, failure=f"Grid Engine error state {letters}")
    if "d" in letters:
        return Seen(letters, "being deleted", RUNNING)
    if set(letters) & set("sST") and "q" not in letters:  # s: the job, S: its queue, T: a load threshold
        return Seen(letters, "suspended", RUNNING)
    if "r" in letters or "t" in letters:
        return Seen(letters, "", RUNNING)
    return Seen(letters, "held" if "h" in letters else "", PENDING)


def _with_reason(seen: Seen, reason: str) -> Seen:
    if not reason:
        return seen
    if seen.phase == ENDED:
        return replace(seen, reason=reason, failure=f"{seen.failure}: {reason}")
    return replace(seen, reason=f"{seen.reason}: {reason}" if seen.reason else reason)


def _numeric(job_id: str) -> int:
    return int(job_id) if job_id.isdigit() else 0


# a process on the host ---------------------------------------------------------------------------

_START = 'setsid sh "$1" >> "$2" 2>&1 < /dev/null & echo $!'


class LocalProcess:
    """No scheduler: the job's script runs as a process of its own session on the host (ids are pids)."""

    kind = "local"
    vanished_wait = 1.0  # its exit file is on the same filesystem, written before the process ends

    def directives(self, name: str, log: str, directory: str, resources: Resources) -> list[str]:
        return [f"# moi job {name}; its output goes to {log}"]

    def submit(self, runner: Runner, script: str) -> str:
        log = script.rsplit("/", 2)[0] + "/framework.log"
        return _submitted(runner.run(["sh", "-c", _START, "moi", script, log]), "sh", r"^\s*(\d+)")

    def poll(self, runner: Runner, ids: Sequence[str]) -> dict[str, Seen]:
        seen = {}
        for some in chunks([pid for pid in ids if is_scheduler_id(pid)]):
            ran, wanted = _run(runner, ["ps", "-o", "pid=,stat=", "-p", ",".join(some)]), set(some)
            for line in ran.stdout.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] in wanted and not parts[1].startswith("Z"):
                    seen[parts[0]] = Seen("RUNNING", "", RUNNING)
        return seen

    def cancel(self, runner: Runner, ids: Sequence[str]) -> None:
        # Each job's whole process group; "--" first, or kill would read "-PID" as an option (-1: every process).
        groups = [f"-{pid}" for pid in ids if is_scheduler_id(pid) and int(pid) > 1]
        for some in chunks(groups):
            _run(runner, ["kill", "-s", "TERM", "--", *some])
