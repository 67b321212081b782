"""What Grid Engine's commands print, read for moi's Grid Engine adapter (``adapters.GridEngine``).

Each function takes one command's output (recorded real outputs of Grid Engine 8.1.9 are in tests/data/gridengine/):

- ``qsub -terse -w e``: the job's id, or its refusal (``Unable to run job: ...``) as ``SchedulerRefused``;
- ``qstat -xml``: each job's state letters (``qw``, ``hqw``, ``r``, ``dr``, ``Eqw`` ...); an ended job is not there;
- ``qstat -j ID,ID,...``: why each job waits (its ``scheduling info``, shown only where the scheduler configuration
  has ``schedd_job_info true``) or why it is in error state (its ``error reason``);
- ``qacct -j ID``: why an ended job ended, for a job that vanished without writing its exit file (killed at its
  walltime, deleted, lost with its node ...).
"""

from __future__ import annotations

import re
import signal
import xml.etree.ElementTree as ElementTree

from moi.compute.schedulers.runner import Ran
from moi.core.errors import SchedulerRefused, SchedulerUnavailable

MOST_REASON = 300  # characters of a reason kept: Grid Engine repeats its queue messages for every job
_NO_MESSAGES = "There are no messages available"
REASONS_OFF = "Collecting of scheduler job information is turned off"  # schedd_job_info false: no reasons
_RECORD = re.compile(r"^={20,}\s*$", re.MULTILINE)  # between two jobs of ``qstat -j``, two records of ``qacct``


def qsub_id(ran: Ran) -> str:
    """The id ``qsub -terse`` printed; SchedulerRefused with Grid Engine's own words when it refused the job."""
    if not ran.ok:
        said = [line.strip() for line in (ran.stderr + "\n" + ran.stdout).splitlines() if line.strip()]
        # "Unable to run job: <why>" then "Exiting.": the line that says why, not the last one
        why = next((line.split(":", 1)[1].strip() for line in said if line.startswith("Unable to run job:")), "")
        raise SchedulerRefused(f"qsub refused the job: {why or ran.problem()}"[:500])
    found = re.match(r"\s*(\d+)", ran.stdout)
    if found is None:
        raise SchedulerRefused(f"qsub gave no job id: {ran.problem()}")
    return found.group(1)


def job_states(text: str) -> dict[str, str]:
    """``qstat -xml``'s jobs, running (``queue_info``) and pending (``job_info``): id -> state letters."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise SchedulerUnavailable(f"qstat -xml gave no XML: {error}") from None
    states = {}
    for job in root.iter("job_list"):
        number = job.findtext("JB_job_number", "").strip()
        if number:
            states[number] = job.findtext("state", "").strip()
    return states


def job_reasons(text: str) -> dict[str, str]:
    """``qstat -j``'s jobs: id -> why it is in error state (``error reason``), else why it waits (``scheduling
    info``, its lines joined by ``; ``); a job with neither is left out."""
    reasons = {}
    for block in _RECORD.split(text):
        number, errors, waits = _job_block(block)
        said = [words for words in errors or waits if words and words != _NO_MESSAGES and REASONS_OFF not in words]
        if number and said:
            reasons[number] = "; ".join(dict.fromkeys(said))[:MOST_REASON]
    return reasons


def _job_block(block: str) -> tuple[str, list[str], list[str]]:
    """One job of ``qstat -j``: its number, its error reasons and its scheduling info lines."""
    number, errors, waits = "", [], []
    current: list[str] | None = None  # the field whose next lines are indented
    for line in block.splitlines():
        if line.startswith("job_number:"):
            number, current = line.split(":", 1)[1].strip(), None
        elif line.startswith("error reason"):
            errors.append(_after_stamp(line.split(":", 1)[1]))
            current = None
        elif line.startswith("scheduling info:"):
            waits.append(line.split(":", 1)[1].strip())
            current = waits
        elif current is not None and line[:1].isspace() and line.strip():
            current.append(line.strip())
        else:
            current = None
    return number, errors, waits


def _after_stamp(text: str) -> str:
    """``  12/08/2026 00:42:42 [0:22515]: error: can't open ...`` -> ``error: can't open ...``."""
    return text.split("]:", 1)[1].strip() if "]:" in text else text.strip()


def accounted(text: str) -> dict[str, str]:
    """``qacct -j ID``'s fields (its last record: an id Grid Engine used again has several), values stripped."""
    records = [record for record in _RECORD.split(text) if record.strip()]
    fields = (line.split(maxsplit=1) for line in (records[-1] if records else "").splitlines())
    return {field[0]: field[1].strip() for field in fields if len(field) == 2}


def ended_reason(text: str) -> str:
    """Why a job ended, for a person, from its ``qacct -j`` record; "" when it says nothing more than an exit
    status of 0 (or there is no record)."""
    fields = accounted(text)
    failed, status = fields.get("failed", "0"), _number(fields.get("exit_status", "0"))
    code = _number(failed)
    if code == 37:  # "qmaster enforced h_rt, h_cpu, or h_vmem limit": which one, from what it asked and ran
        limit, ran = _asked_seconds(fields.get("category", ""), "h_rt"), _number(fields.get("ru_wallclock", ""))
        if limit is not None and ran >= limit:
            return f"walltime (h_rt) exceeded: it ran {ran}s of its {limit}s"
        return f"a limit Grid Engine enforces was exceeded (walltime h_rt, CPU time h_cpu or memory h_vmem): {failed}"
    if code == 100 and status > 128:  # "assumedly after job": killed while running
        return f"killed by {_signal_name(status - 128)} (deleted with qdel, or killed on its node)"
    if code:
        return f"Grid Engine: failed {failed}" + (f", exit status {status}" if status else "")
    if status > 128:
        return f"killed by {_signal_name(status - 128)} (exit status {status})"
    return f"exit status {status}" if status else ""


def _number(text: str) -> int:
    found = re.match(r"\s*(\d+)", text)
    return int(found.group(1)) if found else 0


def _asked_seconds(category: str, name: str) -> int | None:
    """A time limit in a qacct ``category`` (``-l h_rt=600,h_vmem=1G -pe smp 2``), in seconds (Grid Engine
    writes them so)."""
    found = re.search(rf"(?:^|[\s,]){name}=(\d+)(?:[\s,]|$)", category)
    return int(found.group(1)) if found else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
