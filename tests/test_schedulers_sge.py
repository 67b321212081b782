"""Scheduler contexts on a real Grid Engine (the session's one-host cell, tests.gridengine): each moi job its own
Grid Engine job with its own resources, followed live by the context's poller to Success, Failed or Cancelled."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import moi.jobs.connections
from moi.job import cancel, get_info, submit, system_call
from moi.jobfiles.directory import directory_of
from tests.conftest import REDIS_PASSWORD, ROOT, finished, until
from tests.gridengine import GridEngine

pytestmark = pytest.mark.slow  # the session's Grid Engine cell is started for these, jobs go through it

WAIT = 120.0  # seconds for what Grid Engine does; nothing here is timed
WAIT_FOR_GO = "until [ -e go ]; do sleep 0.2; done"  # a shell job that runs until its directory has ``go``


def doubled(x: int) -> int:
    return 2 * x


@pytest.fixture
def grid(gridengine: GridEngine, store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[GridEngine]:
    """A scheduler context ``grid`` on the session's cell, polled every half second."""
    for name, value in gridengine.env().items():
        if name.startswith("SGE_"):
            monkeypatch.setenv(name, value)  # the poller's qsub and qstat reach the cell
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the job's Python finds moi and this module (-V passes it on)
    moi.jobs.connections.configure(schedulers={"grid": {"scheduler": "sge", "poll": "0.5", "python": sys.executable}})
    yield gridengine
    moi.jobs.connections.configure(schedulers={})
    left = gridengine.job_ids()
    if left:  # the cell is the session's: its next user finds it empty
        subprocess.run(["qdel", "-f", *left], env=gridengine.env(), capture_output=True, timeout=60)
        until(lambda: not set(left) & set(gridengine.job_ids()), "the tests' jobs deleted", WAIT)


def scheduler_of(job_id: str) -> dict[str, Any]:
    return get_info(job_id).get("scheduler") or {}


def go(job_id: str) -> None:
    with open(f"{directory_of(job_id)}/go", "w"):
        pass


def test_resources_reach_grid_engine_and_the_exit_code_decides(grid: GridEngine) -> None:
    asked = {"cores": 2, "memory": "512M", "walltime": "10m", "partition": "all.q"}
    command = f"{WAIT_FOR_GO}; echo sized; env | grep ^MOI_ || echo no moi settings; echo $PYTHONPATH"
    job_id, _, _ = submit("grid", "alice", "sized", None, system_call, command, resources=asked)
    bad, _, _ = submit("grid", "alice", "bad", None, system_call, "echo oops >&2; exit 3")
    sge_id = until(lambda: scheduler_of(job_id).get("id"), "the job's Grid Engine id", WAIT)
    shown = grid.run("qstat", "-j", sge_id)
    for words in ("h_vmem=256M", "h_rt=600", "smp range: 2", "hard_queue_list:            all.q", f"moi-{job_id}"):
        assert words in shown, (words, shown)
    go(job_id)
    done = finished(job_id, timeout=WAIT)
    assert done["status"] == "Success" and "sized" in done["result"], done
    assert "no moi settings" in done["result"] and REDIS_PASSWORD not in done["result"]  # not moi's credentials,
    assert str(ROOT) in done["result"]  # but the rest of the submitter's environment (-V)
    assert done["scheduler"]["kind"] == "sge" and done["scheduler"]["exit_code"] == 0
    failed = finished(bad, timeout=WAIT)
    assert failed["status"] == "Failed" and "exited with code 3" in failed["result"] and "oops" in failed["result"]
    assert failed["scheduler"]["exit_code"] == 3


def test_a_job_past_its_walltime_fails_saying_so(grid: GridEngine) -> None:
    job_id, _, _ = submit("grid", "alice", "slow", None, system_call, "sleep 120", resources={"walltime": "3s"})
    done = finished(job_id, timeout=WAIT)
    assert done["status"] == "Failed", done
    assert done["result"].startswith("Ended by the scheduler: walltime (h_rt) exceeded"), done["result"]


def test_a_job_waits_with_grid_engines_reason_then_a_cancel_ends_it(grid: GridEngine) -> None:
    everything = {"cores": grid.slots}
    first, _, _ = submit("grid", "alice", "hog", None, system_call, "sleep 300", resources=everything)
    second, _, _ = submit("grid", "alice", "waits", None, system_call, "echo never", resources=everything)
    until(lambda: get_info(first)["status"] == "Running", "the first job running", WAIT)
    seen = until(lambda: scheduler_of(second).get("reason") and scheduler_of(second), "the second one's reason", WAIT)
    assert seen["state"] == "qw" and "full" in seen["reason"], seen
    assert get_info(second)["status"] == "Queued"
    cancel(first)
    cancel(second)
    assert finished(first, timeout=WAIT)["status"] == "Cancelled"
    assert finished(second, timeout=WAIT)["status"] == "Cancelled"
    assert not set(grid.job_ids()) & {scheduler_of(first)["id"], scheduler_of(second)["id"]}


def test_grid_engines_refusal_is_the_jobs_failure(grid: GridEngine) -> None:
    nowhere, _, _ = submit("grid", "alice", "x", None, system_call, "true", resources={"partition": "nope"})
    too_big, _, _ = submit("grid", "alice", "y", None, system_call, "true", resources={"cores": 99})
    failed = finished(nowhere, timeout=WAIT)
    assert failed["status"] == "Failed" and failed["result"].startswith("qsub refused the job: "), failed
    assert 'unknown queue "nope"' in failed["result"]
    refused = finished(too_big, timeout=WAIT)
    assert refused["status"] == "Failed" and refused["result"] == "qsub refused the job: error: no suitable queues"


def test_a_python_job_runs_on_the_node_and_its_value_comes_back(grid: GridEngine) -> None:
    job_id, _, handle = submit("grid", "alice", "py", None, doubled, 21)
    assert finished(job_id, timeout=WAIT)["status"] == "Success"
    assert handle.get(timeout=5) == 42


def test_a_job_that_cannot_start_fails_with_grid_engines_error_and_leaves_the_cell(grid: GridEngine) -> None:
    """Its directory gone while it waits: Grid Engine cannot open its output there and holds it in error state
    (``Eqw``) for good; moi fails it with Grid Engine's error reason and deletes it."""
    hog, _, _ = submit("grid", "alice", "hog", None, system_call, WAIT_FOR_GO, resources={"cores": grid.slots})
    doomed, _, _ = submit("grid", "alice", "doomed", None, system_call, "echo never", resources={"cores": grid.slots})
    until(lambda: get_info(hog)["status"] == "Running", "the first job running", WAIT)
    sge_id = until(lambda: scheduler_of(doomed).get("id"), "the second job in Grid Engine", WAIT)
    shutil.rmtree(directory_of(doomed))
    go(hog)
    failed = finished(doomed, timeout=WAIT)
    assert failed["status"] == "Failed" and failed["scheduler"]["state"] == "Eqw", failed
    assert failed["result"].startswith("Ended by the scheduler: Grid Engine error state Eqw: error: "), failed["result"]
    assert finished(hog, timeout=WAIT)["status"] == "Success"
    until(lambda: sge_id not in grid.job_ids(), "the job in error state deleted", WAIT)
