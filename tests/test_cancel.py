"""Cancelling queued and running jobs, for real, on the session's cluster."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from moi.core.info import Status
from moi.errors import JobCancelled
from moi.job import cancel, submit
from moi.relay.node_removal import remove_nodes
from tests import jobs
from tests.conftest import finished, run_moi, until

CANCEL_BOUND = 30  # generous: the engine notices within a second, a shell gets 3s before SIGKILL


def wait_status(store, job_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = store.get(job_id)
        if info["status"] == status:
            return info
        time.sleep(0.1)
    raise AssertionError(f"{job_id} still {store.get(job_id)['status']}, not {status}")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # a zombie waits for its parent's wait(); it no longer runs


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not gone(pid):
        time.sleep(0.1)
    return gone(pid)


def test_cancel_queued_never_runs_and_running_python_is_interrupted(store) -> None:
    running = [submit("default", "sweeper", f"long {n}", None, jobs.sleepy, 300)[0] for n in range(2)]
    group = store.get(running[0])["parent"]
    for job_id in running:
        wait_status(store, job_id, Status.RUNNING)
    queued, _, queued_handle = submit("default", group, "waits", None, jobs.add, 1, 2)

    report = cancel(queued)
    assert report.cancelled == [queued]
    info = store.get(queued)
    assert info["status"] == Status.CANCELLED and info["date_end"] and info["date_start"] is None

    report = cancel(group)  # both engines are busy with jobs that sleep for 5 minutes
    assert sorted(report.requested) == sorted(running) and report.finished == [queued]
    for job_id in running:
        info = finished(job_id, timeout=CANCEL_BOUND)
        assert info["status"] == Status.CANCELLED and info["date_end"], info

    with pytest.raises(JobCancelled, match="Cancelled before it started"):
        queued_handle.get(timeout=60)
    assert store.redis.zscore(store.keys.queue("default"), queued) is None  # out of the queue too
    info = store.get(queued)
    assert info["status"] == Status.CANCELLED and info["date_start"] is None
    after, _, _ = submit("default", "cancel-user", "next", None, jobs.add, 2, 3)
    assert finished(after)["result"] == 5  # the engines are free again


def test_cancel_system_call_terminates_its_process_group(store, tmp_path: Path) -> None:
    # The shell ignores SIGTERM (so does its foreground sleep): only SIGKILL ends them.
    cmd = f"sleep 300 & echo $! > {tmp_path}/child; echo $$ > {tmp_path}/shell; trap '' TERM; sleep 301"
    job_id = run_moi("submit", "--cmd", cmd, "--cmd-type", "system").stdout.split()[-1]
    wait_status(store, job_id, Status.RUNNING)
    deadline = time.monotonic() + 30
    while not (tmp_path / "shell").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int((tmp_path / name).read_text()) for name in ("child", "shell")]

    done = run_moi("cancel", "--job-id", job_id)
    assert done.returncode == 0 and "1 running job(s) being interrupted" in done.stdout, done

    info = finished(job_id, timeout=CANCEL_BOUND)
    assert info["status"] == Status.CANCELLED, info
    assert all(wait_gone(pid) for pid in pids), [(pid, gone(pid)) for pid in pids]


def test_cancel_finished_changes_nothing_and_unknown_is_an_error(store) -> None:
    job_id, _, _ = submit("default", "cancel-user", "quick", None, jobs.add, 1, 1)
    before = finished(job_id)

    done = run_moi("cancel", "--job-id", job_id)
    assert done.returncode == 0
    assert done.stdout.strip() == f"Job {job_id} has already finished; nothing to cancel"
    assert store.get(job_id) == before

    unknown = "0c1ce595-4f6d-4fcb-b872-90118f6b1cd9"
    done = run_moi("cancel", "--job-id", unknown)
    assert done.returncode == 1 and done.stderr.strip() == f"Unknown job id: {unknown}"


@pytest.mark.parametrize("pid_file", [None])
def test_cancel_leaves_no_liveness_keys(store, r, pid_file) -> None:
    job_id, _, _ = submit("default", "cancel-user", "long", None, jobs.sleepy, 300)
    wait_status(store, job_id, Status.RUNNING)
    assert r.sismember(store.keys.running, job_id) and r.exists(store.keys.heartbeat(job_id))
    cancel(job_id)
    assert finished(job_id, timeout=CANCEL_BOUND)["status"] == Status.CANCELLED
    assert not r.sismember(store.keys.running, job_id)
    assert not r.exists(store.keys.heartbeat(job_id), store.keys.cancel(job_id))
    assert r.zscore(store.keys.queue("default"), job_id) is None
    assert os.environ["MOI_REDIS_URL"]  # keys above were read from the session's Redis


def test_a_job_removed_as_it_runs_is_stopped_and_its_engine_freed(store) -> None:
    """The websocket's remove takes a running job's info away without a cancel first: its engine stops it at its
    next heartbeat, rather than running it on with nothing left to record its end in."""
    long = [submit("default", "alice", f"long {n}", None, jobs.sleepy, 600)[0] for n in range(2)]  # both engines
    until(lambda: all(store.get(job_id)["status"] == Status.RUNNING for job_id in long), "both running", 60)

    async def remove() -> None:
        client = aioredis.Redis.from_url(store.url, decode_responses=True)
        await remove_nodes(client, store.keys, long)
        await client.aclose()

    asyncio.run(remove())
    quick, _, handle = submit("default", "alice", "after", None, jobs.add, 2, 3)
    assert handle.get(timeout=60) == 5  # an engine was freed: the removed jobs were stopped
