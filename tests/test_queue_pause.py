"""Pause and resume of moi's queue: a user, a context, one job; over the CLI, Python and the websocket.

The session's real Redis, cluster and a real Tornado server. No timing assertions.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from moi.core.info import Status
from moi.errors import JobCancelled
from moi.job import cancel, get_info, pause, resume, submit
from moi.server import make_app
from tests import jobs, queue_jobs
from tests.conftest import finished, run_moi
from tests.test_queue import lines, wait_status
from tests.test_relay_security import SECRET, connect, frames_until, is_get_of
from tests.web import serving


def busy_engines(tmp_path: Path) -> tuple[list[str], list[Path]]:
    releases = [tmp_path / "release-1", tmp_path / "release-2"]
    holders = [submit("default", "holder", "hold", None, queue_jobs.hold, str(path))[0] for path in releases]
    for job_id in holders:
        wait_status(job_id, Status.RUNNING)
    return holders, releases


def test_a_paused_user_waits_while_others_run_and_resumes_in_order(r, tmp_path: Path) -> None:
    holders, releases = busy_engines(tmp_path)
    log = tmp_path / "order"
    mine = [submit("default", "pauser", f"job {n}", None, queue_jobs.record, str(log), str(n))[0] for n in range(3)]
    other, _, _ = submit("default", "other", "other", None, queue_jobs.record, str(log), "other")

    assert sorted(pause(user="pauser")) == sorted(mine)
    later, _, _ = submit("default", "pauser", "job 3", None, queue_jobs.record, str(log), "3")
    assert [get_info(job_id)["status"] for job_id in [*mine, later]] == [Status.PAUSED] * 4
    releases[0].touch()  # one engine free: it runs the other user's job, and none of the paused ones
    assert finished(other)["status"] == Status.SUCCESS
    finished(holders[0])
    assert [get_info(job_id)["status"] for job_id in [*mine, later]] == [Status.PAUSED] * 4
    assert lines(log) == ["other"]

    assert sorted(resume(user="pauser")) == sorted([*mine, later])
    for job_id in [*mine, later]:
        assert finished(job_id)["status"] == Status.SUCCESS
    assert lines(log) == ["other", "0", "1", "2", "3"]  # one engine: their old order
    releases[1].touch()
    finished(holders[1])


def test_a_paused_job_can_be_cancelled_and_never_runs(r, tmp_path: Path) -> None:
    holders, releases = busy_engines(tmp_path)
    log = tmp_path / "ran"
    job_id, _, handle = submit("default", "pauser", "never", None, queue_jobs.record, str(log), "never")
    assert pause(job_id=job_id) == [job_id]
    assert cancel(job_id).cancelled == [job_id]
    for path in releases:
        path.touch()
    with pytest.raises(JobCancelled):
        handle.get(timeout=60)
    for holder in holders:
        finished(holder)
    assert resume(job_id=job_id) == [] and lines(log) == []


def test_pause_and_resume_a_context_from_the_cli(r) -> None:
    try:
        done = run_moi("pause", "--context", "default")
        assert (done.returncode, done.stdout.strip()) == (0, "Paused context default: 0 queued job(s) held")
        job_id, _, handle = submit("default", "cli-pause", "waits", None, jobs.add, 1, 2)
        assert get_info(job_id)["status"] == Status.PAUSED
    finally:
        done = run_moi("resume", "--context", "default")
    assert (done.returncode, done.stdout.strip()) == (0, "Resumed context default: 1 job(s) queued again")
    assert handle.get(timeout=60) == 3
    usage = run_moi("pause", "--context", "default", "--user", "x")
    assert usage.returncode == 2 and "Give exactly one of" in usage.stderr


def test_the_websocket_pauses_and_resumes_only_the_users_own_jobs(r, store, tmp_path: Path) -> None:
    holders, releases = busy_engines(tmp_path)
    mine, group, _ = submit("default", "alice", "mine", None, jobs.add, 1, 1)
    theirs, _, _ = submit("default", "mallory", "theirs", None, jobs.add, 2, 2)

    async def test() -> None:
        async with serving(make_app(cookie_secret=SECRET)) as port:
            ws = await connect(port, "alice")
            ws.write_message(json.dumps({"get": []}))
            await frames_until(ws, is_get_of(mine))
            ws.write_message(json.dumps({"pause": [mine]}))
            frames = await frames_until(ws, lambda f: f.get("update", {}).get("status") == Status.PAUSED)
            assert frames[-1]["update"]["id"] == mine
            ws.write_message(json.dumps({"pause": [theirs]}))
            refusal = await frames_until(ws, lambda f: "error" in f)
            assert "not among your jobs" in refusal[-1]["error"]
            ws.write_message(json.dumps({"resume": [group]}))
            frames = await frames_until(ws, lambda f: f.get("update", {}).get("status") == Status.QUEUED)
            assert frames[-1]["update"]["id"] == mine
            ws.close()

    asyncio.run(test())
    for path in releases:
        path.touch()
    assert finished(mine)["status"] == Status.SUCCESS and finished(theirs)["status"] == Status.SUCCESS
    for holder in holders:
        finished(holder)


def test_a_paused_users_batch_waits_and_runs_once_resumed(r, store, tmp_path: Path) -> None:
    from moi.jobs.batch import submit_many

    log = tmp_path / "ran"
    store.ensure_group("sweeper")
    pause(user="sweeper")
    job_ids, _, batch = submit_many("default", "sweeper", "sweep", None, queue_jobs.record, [(str(log), "x")] * 3)
    assert [get_info(job_id)["status"] for job_id in job_ids] == [Status.PAUSED] * 3
    other, _, _ = submit("default", "other", "other", None, jobs.add, 1, 2)
    assert finished(other)["status"] == Status.SUCCESS  # the engines are free, and leave the batch alone
    assert [get_info(job_id)["status"] for job_id in job_ids] == [Status.PAUSED] * 3

    assert sorted(resume(user="sweeper")) == sorted(job_ids)
    assert batch.get(timeout=120) == ["x"] * 3
    assert lines(log) == ["x"] * 3
