"""moi's Grid Engine adapter reading real outputs of Grid Engine 8.1.9 (recorded in tests/data/gridengine/ from the
test cell by tests/test_gridengine_cell.py): what it makes of qsub's answers, qstat's states and reasons, and
qacct's records. Cheap: no Grid Engine runs here (tests/test_schedulers_sge.py runs jobs through a real one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from moi.compute.schedulers import gridengine
from moi.compute.schedulers.adapters import ENDED, PENDING, RUNNING, GridEngine, sge_seen
from moi.compute.schedulers.runner import LocalRunner, Ran
from moi.core.errors import SchedulerRefused, SchedulerUnavailable

RECORDED = Path(__file__).parent / "data" / "gridengine"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def ran(name: str) -> Ran:
    """A recorded command's end (``returncode N``, ``stdout:``, ``stderr:`` in the file) as the adapter gets it."""
    head, rest = recorded(name).split("\nstdout:\n", 1)
    stdout, stderr = rest.split("stderr:\n", 1)
    return Ran(int(head.split()[1]), stdout, stderr)


def test_qsub_gives_the_id_or_grid_engines_reason_for_refusing() -> None:
    assert gridengine.qsub_id(Ran(0, recorded("qsub-terse.txt"), "")) == "1"
    with pytest.raises(SchedulerRefused, match='^qsub refused the job: job rejected: .* "nope" does not exist$'):
        gridengine.qsub_id(ran("qsub-refused-pe.txt"))
    with pytest.raises(SchedulerRefused, match="^qsub refused the job: error: no suitable queues$"):
        gridengine.qsub_id(ran("qsub-refused-never-runs.txt"))
    with pytest.raises(SchedulerRefused, match="gave no job id"):
        gridengine.qsub_id(Ran(0, "Your job 5 is submitted\n", ""))


def test_qstat_xml_shows_running_jobs_under_queue_info_and_pending_ones_under_job_info() -> None:
    assert gridengine.job_states(recorded("qstat-pending-and-running.xml")) == {"1": "r", "2": "qw"}
    assert gridengine.job_states(recorded("qstat-running.xml")) == {"2": "r"}
    assert gridengine.job_states(recorded("qstat-held-and-error.xml")) == {"8": "Eqw", "7": "hqw"}
    with pytest.raises(SchedulerUnavailable, match="no XML"):
        gridengine.job_states("error: commlib error: got select error (Connection refused)")


def test_state_letters_are_moi_phases() -> None:
    assert (sge_seen("qw").phase, sge_seen("qw").reason) == (PENDING, "")
    assert (sge_seen("hqw").phase, sge_seen("hqw").reason) == (PENDING, "held")
    for letters in ("r", "t", "Rr", "hr"):
        assert sge_seen(letters).phase == RUNNING, letters
    assert (sge_seen("dr").phase, sge_seen("dr").reason) == (RUNNING, "being deleted")
    assert (sge_seen("s").phase, sge_seen("S").reason) == (RUNNING, "suspended")
    error = sge_seen("Eqw")
    assert (error.phase, error.failure) == (ENDED, "Grid Engine error state Eqw") and not error.cancelled


def test_qstat_j_tells_why_jobs_wait_or_failed() -> None:
    both = recorded("qstat-j-pending.txt") + recorded("qstat-j-running.txt") + recorded("qstat-j-held.txt")
    reasons = gridengine.job_reasons(both)
    assert reasons == {"2": 'cannot run in PE "smp" because it only offers 0 slots', "7": "Job is in hold state"}
    assert gridengine.job_reasons(recorded("qstat-j-error.txt")) == {
        "8": 'error: can\'t open output file "/nonexistent/moi-broken.out": No such file or directory'
    }
    several = (
        "==============================================================\njob_number:                 3\n"
        'scheduling info:            queue instance "all.q@localhost" dropped because it is full\n'
        "                            All queues dropped because of overload or full\n"
        "                            Job is in hold state\n"
    )
    assert gridengine.job_reasons(several)["3"].endswith("because of overload or full; Job is in hold state")
    assert gridengine.job_reasons(ran("qstat-j-ended.txt").stdout) == {}
    turned_off = (
        "job_number:                 4\n"
        "scheduling info:            (Collecting of scheduler job information is turned off)\n"
    )
    assert gridengine.REASONS_OFF in turned_off and gridengine.job_reasons(turned_off) == {}  # schedd_job_info false


def test_qacct_tells_why_a_job_without_its_exit_file_ended() -> None:
    assert gridengine.ended_reason(recorded("qacct-walltime.txt")) == "walltime (h_rt) exceeded: it ran 4s of its 3s"
    assert gridengine.ended_reason(recorded("qacct-qdel.txt")) == (
        "killed by SIGKILL (deleted with qdel, or killed on its node)"
    )
    assert gridengine.ended_reason(recorded("qacct-error.txt")) == "Grid Engine: failed 26  : opening input/output file"
    assert gridengine.ended_reason(recorded("qacct-exit3.txt")) == "exit status 3"
    assert gridengine.ended_reason(recorded("qacct-success.txt")) == ""
    assert gridengine.ended_reason(ran("qacct-unknown.txt").stdout) == ""
    fields = gridengine.accounted(recorded("qacct-success.txt") + recorded("qacct-exit3.txt"))
    assert (fields["jobnumber"], fields["exit_status"], fields["failed"]) == ("1", "3", "0")  # the last record


def test_the_directives_ask_grid_engine_for_the_resources_and_the_environment() -> None:
    asked = {"cores": 4, "memory": 2048, "walltime": 5400, "partition": "long.q", "account": "physics"}
    lines = GridEngine().directives("moi-abc", "/w/abc/framework.log", "/w/abc", asked)
    assert lines == [
        "#$ -N moi-abc",
        "#$ -o /w/abc/framework.log",
        "#$ -j y",
        "#$ -wd /w/abc",
        "#$ -S /bin/sh",
        "#$ -V",
        "#$ -pe smp 4",
        "#$ -l h_vmem=512M",
        "#$ -l h_rt=01:30:00",
        "#$ -q long.q",
        "#$ -A physics",
    ]
    with pytest.raises(SchedulerRefused, match="run on one host"):
        GridEngine().directives("moi-abc", "/w/abc/framework.log", "/w/abc", {"nodes": 2})


def test_a_missing_qsub_leaves_the_job_waiting_not_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No qsub where the commands run: the cluster is unavailable (the job waits Queued), not a refusal."""
    for tool in ("sh", "env", "sed"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or tool)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SchedulerUnavailable, match="^qsub is not installed on this machine"):
        GridEngine().submit(LocalRunner(), str(tmp_path / "job.sh"))
