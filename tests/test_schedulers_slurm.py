"""Scheduler contexts on a real Slurm (the session's one-node cluster, tests.slurm): each moi job its own Slurm job
with its own resources, followed live by the context's poller to Success, Failed or Cancelled."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import moi.jobs.connections
from moi import services
from moi.job import cancel, get_info, submit, system_call
from moi.jobfiles.directory import directory_of
from moi.relay.node_removal import remove_nodes
from tests import service_defs
from tests.conftest import ROOT, finished, until
from tests.retry_jobs import start_engine
from tests.slurm import Slurm

pytestmark = pytest.mark.slow  # the session's Slurm cluster is started for these (about 10 s), jobs go through it

WAIT = 120.0  # seconds for what Slurm does; nothing here is timed


def doubled(x: int) -> int:
    return 2 * x


@pytest.fixture
def hpc(slurm: Slurm, store: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slurm]:
    """A scheduler context ``hpc`` on the session's Slurm, polled every half second."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.config))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the node's Python finds moi and this module (sbatch exports all)
    config = {"scheduler": "slurm", "poll": "0.5", "python": sys.executable, "cores": "1"}
    moi.jobs.connections.configure(schedulers={"hpc": config})
    yield slurm
    moi.jobs.connections.configure(schedulers={})
    slurm.cancel_named("moi-")


def scheduler_of(job_id: str) -> dict[str, Any]:
    return get_info(job_id).get("scheduler") or {}


def test_resources_reach_slurm_and_the_job_ends_with_its_exit_code(hpc: Slurm) -> None:
    asked = {"cores": 2, "memory": "512M", "walltime": "10m", "partition": "long"}
    job_id, _, _ = submit(
        "hpc",
        "alice",
        "sized",
        None,
        system_call,
        "sleep 2; echo sized; env | grep ^MOI_ || echo no-moi-settings",
        resources=asked,
    )
    slurm_id = until(lambda: scheduler_of(job_id).get("id"), "the job's Slurm id", WAIT)
    shown = hpc.run("scontrol", "show", "job", slurm_id)
    for words in ("CPUs/Task=2", "MinMemoryNode=512M", "TimeLimit=00:10:00", "Partition=long", f"JobName=moi-{job_id}"):
        assert words in shown, (words, shown)
    done = finished(job_id, timeout=WAIT)
    assert done["status"] == "Success" and "sized" in done["result"], done
    assert "no-moi-settings" in done["result"]  # the job runs without moi's settings (MOI_REDIS_URL, its password)
    assert done["resources"] == {"cores": 2, "memory": 512, "walltime": 600, "partition": "long"}
    assert done["scheduler"]["kind"] == "slurm" and done["scheduler"]["exit_code"] == 0


def test_a_job_waits_pending_with_slurms_reason_then_a_cancel_ends_it(hpc: Slurm) -> None:
    everything = {"cores": hpc.cpus}
    first, _, _ = submit("hpc", "alice", "hog", None, system_call, "sleep 300", resources=everything)
    second, _, _ = submit("hpc", "alice", "waits", None, system_call, "echo never", resources=everything)
    until(lambda: get_info(first)["status"] == "Running", "the first job running", WAIT)
    seen = until(lambda: scheduler_of(second).get("reason") and scheduler_of(second), "the second one's reason", WAIT)
    assert seen["state"] == "PENDING" and seen["reason"] in ("Resources", "Priority"), seen
    assert get_info(second)["status"] == "Queued"
    cancel(first)
    cancel(second)
    assert finished(first, timeout=WAIT)["status"] == "Cancelled"
    assert finished(second, timeout=WAIT)["status"] == "Cancelled"
    assert not hpc.job_ids(f"moi-{first}") and not hpc.job_ids(f"moi-{second}")


def test_slurms_refusal_is_the_jobs_failure(hpc: Slurm) -> None:
    nowhere, _, _ = submit("hpc", "alice", "x", None, system_call, "true", resources={"partition": "nope"})
    too_long, _, _ = submit(
        "hpc", "alice", "y", None, system_call, "true", resources={"partition": "short", "walltime": "2h"}
    )
    failed = finished(nowhere, timeout=WAIT)
    assert failed["status"] == "Failed" and "sbatch refused the job" in failed["result"], failed
    assert "Invalid partition name specified" in failed["result"]
    refused = finished(too_long, timeout=WAIT)
    assert refused["status"] == "Failed" and "sbatch refused the job" in refused["result"], refused


def test_a_python_job_runs_on_the_node_and_its_value_comes_back(hpc: Slurm) -> None:
    job_id, _, handle = submit("hpc", "alice", "py", None, doubled, 21)
    assert finished(job_id, timeout=WAIT)["status"] == "Success"
    assert handle.get(timeout=5) == 42


def test_a_job_submitted_by_a_process_that_exited_is_followed_by_the_next(hpc: Slurm, tmp_path) -> None:
    """moi restarted: the submitting process hands the job to Slurm and exits; this process resumes from Redis."""
    moi.jobs.connections.reset()  # no poller of this process runs meanwhile
    config = tmp_path / "moi.ini"
    config.write_text("[context hpc]\nscheduler = slurm\npoll = 0.5\n")
    env = {**os.environ, "MOI_CONFIG_FP": str(config)}
    argv = [sys.executable, "-m", "moi", "submit", "--context", "hpc", "--cmd-type", "system", "--cmd", "sleep 3"]
    made = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=WAIT)
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.split("Submitted job id:")[1].split()[0]
    until(lambda: scheduler_of(job_id).get("id"), "the job in Slurm after its submitter exited", WAIT)
    moi.jobs.connections.dispatch_all()  # as moi server or moi watchdog starts: the same context, a new poller
    assert finished(job_id, timeout=WAIT)["status"] == "Success"


def test_a_services_run_goes_to_slurm_and_postprocess_reads_its_output(hpc: Slurm, tmp_path, monkeypatch) -> None:
    """saliweb's shape: a service job on an engine; its run() a Slurm job in the service job's directory."""
    config = tmp_path / "moi.ini"  # the engine of the service job knows the scheduler context as this process does
    config.write_text("[context hpc]\nscheduler = slurm\npoll = 0.5\n")
    monkeypatch.setenv("MOI_CONFIG_FP", str(config))
    monkeypatch.setenv("MOI_CONTEXTS", f"{os.environ['MOI_CONTEXTS']},engines={tmp_path}/no-cluster.json")
    moi.jobs.connections.configure(schedulers={})
    engine = start_engine("engines", moi.jobs.connections.store().url, 3600, tmp_path / "engine.log")
    services.register(service_defs.OnSlurm)
    try:
        job_id, _, _ = services.submit("on-slurm", "alice", {"words": "hello"}, context="engines")
        done = finished(job_id, timeout=WAIT)
        assert done["status"] == "Success", (done, (tmp_path / "engine.log").read_text()[-3000:])
        directory = directory_of(job_id, done)
        assert Path(directory, "postprocessed.txt").read_text() == "HELLO\n"
        assert Path(directory, "cores.txt").read_text().strip() == "2"  # Slurm gave it the 2 cores asked
        child = done["result"]["scheduler_job"]
        assert get_info(child)["scheduler"]["kind"] == "slurm" and get_info(child)["parent"] == job_id
    finally:
        services.unregister("on-slurm")
        engine.kill()
        engine.wait(30)


def _polled(store: Any) -> str:
    return str(json.loads(store.redis.get(store.keys.scheduler_seen("hpc")))["polled"])


async def _remove(store: Any, job_id: str) -> None:
    """The job's node deleted as the websocket's remove does (no cancel first)."""
    client = aioredis.from_url(store.url, decode_responses=True)
    try:
        await remove_nodes(client, store.keys, [job_id])
    finally:
        await client.aclose()


def test_a_removed_job_is_cancelled_in_slurm_and_a_bad_id_fails_alone(hpc: Slurm, store: Any) -> None:
    """A job removed from moi does not run on in Slurm outside every quota; a job whose stored id is not one
    ("abc": squeue would refuse the whole command) fails alone while its neighbour is still followed."""
    kept, _, _ = submit("hpc", "alice", "kept", None, system_call, "sleep 300")
    removed, _, _ = submit("hpc", "alice", "removed", None, system_call, "sleep 300")
    bad, _, _ = submit("hpc", "alice", "bad", None, system_call, "sleep 300")
    for job_id in (kept, removed, bad):
        until(lambda job_id=job_id: get_info(job_id)["status"] == "Running", "the jobs running", WAIT)
    asyncio.run(_remove(store, removed))
    store.update(bad, lambda info: {**info, "scheduler": {**info["scheduler"], "id": "abc"}})
    until(lambda: not hpc.job_ids(f"moi-{removed}"), "the removed job cancelled in Slurm", WAIT)
    failed = finished(bad, timeout=WAIT)
    assert failed["status"] == "Failed" and "scheduler id 'abc' is not one" in failed["result"], failed
    for _ in range(2):  # two more polls: the neighbour is still seen in squeue, never noted as gone from it
        before = _polled(store)
        until(lambda before=before: _polled(store) != before, "one more poll", WAIT)
    assert get_info(kept)["status"] == "Running" and "gone" not in scheduler_of(kept), get_info(kept)
    cancel(kept)
    assert finished(kept, timeout=WAIT)["status"] == "Cancelled"


def test_a_job_whose_hand_over_was_cut_short_is_found_in_slurm_by_its_name(hpc: Slurm, store: Any) -> None:
    """moi stopped between sbatch and keeping the id: the job, SUBMITTING without an id for long, is looked up
    as moi-<id> and followed again (not failed, nor left to run unseen)."""
    job_id, _, _ = submit("hpc", "alice", "cut short", None, system_call, "sleep 300")
    until(lambda: get_info(job_id)["status"] == "Running", "the job running", WAIT)
    slurm_id = scheduler_of(job_id)["id"]
    stuck = {"kind": "slurm", "state": "SUBMITTING", "stuck_since": time.time() - 3600}
    worklist = store.keys.scheduled("hpc")
    store.update(job_id, lambda info: {**info, "scheduler": stuck}, also=[["HSET", worklist, job_id, ""]])
    until(lambda: scheduler_of(job_id).get("id") == slurm_id, "the job found again by its name", WAIT)
    assert store.redis.hget(worklist, job_id) == slurm_id and get_info(job_id)["status"] == "Running"
    cancel(job_id)
    assert finished(job_id, timeout=WAIT)["status"] == "Cancelled"
