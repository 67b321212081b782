"""Faults injected for real: a SIGKILLed engine, a cluster that goes away, a Redis restart.

No mocks: the engine is killed with SIGKILL, the embedded runtime is stopped,
and a dedicated redis-server is stopped and started again on the same port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moi.jobs.connections
from moi.compute import heartbeats
from moi.compute.running import _starter, _Tracker
from moi.compute.watchdog import ENGINE_LOST_WITHIN, Watchdog
from moi.core.info import Info, Status, is_finished, new_info
from moi.job import submit
from moi.jobs.cancel import _cancel_if_queued
from moi.storage import redis_server, runtime
from tests import fault_jobs, jobs
from tests import test_depth as depth
from tests.conftest import finished, run_moi, until

SLACK = 30  # on top of the documented bounds: the machine is shared and slow


def poll(store, job_id: str, done, timeout: float) -> Info:
    """Plain polling, no watchdog of our own: only what moi runs may end the job."""
    deadline = time.monotonic() + timeout
    info = store.get(job_id)
    while not done(info) and time.monotonic() < deadline:
        time.sleep(0.2)
        info = store.get(job_id)
    return info


def running(info: Info) -> bool:
    return info["status"] not in (Status.QUEUED, None)


@pytest.mark.slow
def test_killed_engine_fails_its_job_and_is_replaced_and_queued_jobs_wait_for_their_cluster(store, r, tmp_path) -> None:
    state = tmp_path / "state"
    # Its own context name: the session's cluster is "default", and a queue is named by its context.
    embedded = {"MOI_CONTEXTS": "", "MOI_STATE_DIR": str(state), "MOI_ENGINES": "1", "MOI_DEFAULT_CONTEXT": "embedded"}
    # Issue 29's attacks on liveness first (see tests/test_depth.py): a gone job's 1,200-deep tree where the
    # runtime's first sweep finds it, and documents in Redis that its watchdog and its sweeper trip on.
    deep = depth.gone_deep_tree(r, state / "jobs")
    depth.plant_tripping_documents(store, r)
    try:
        # Submitted by a process that exits at once: no submitter is left to notice anything.
        job_id = run_moi("submit", "--cmd", "import time; time.sleep(300)", env=embedded, timeout=240)
        job_id = job_id.stdout.split()[-1]
        info = poll(store, job_id, running, 120)
        assert info["status"] == Status.RUNNING, info
        until(lambda: not deep.exists(), "the runtime's sweeper removed the deep tree")
        os.kill(int(info["engine"].rsplit(":", 1)[1]), signal.SIGKILL)

        info = poll(store, job_id, is_finished, ENGINE_LOST_WITHIN + SLACK)  # the runtime's watchdog, still alive
        assert info["status"] == Status.FAILED and info["result"].startswith("Engine lost:"), info
        depth.assert_loop_failures_shown(store, r)  # each failure counted, and the loops went on

        # The runtime started a new engine: the cluster (of one engine) runs jobs again.
        again = run_moi("submit", "--cmd", "import os; return os.getpid()", "--block", env=embedded)
        assert "status\t\t: Success" in again.stdout, again
        assert f"engine\t\t: {info['engine']}" not in again.stdout

        # Batch jobs on an engine that dies: the running one fails, the other ends either way.
        commands = tmp_path / "commands"
        commands.write_text("sleep 300\ntrue\n")
        out = run_moi("submit", "--each", str(commands), env=embedded).stdout
        batch = [line.split()[-1] for line in out.splitlines() if line.startswith("Submitted job id:")]
        assert len(batch) == 2, out
        assert poll(store, batch[0], running, 60)["status"] == Status.RUNNING
        os.kill(int(r.get(store.keys.heartbeat(batch[0])).rsplit(":", 1)[1]), signal.SIGKILL)
        info = poll(store, batch[0], is_finished, ENGINE_LOST_WITHIN + SLACK)
        assert info["status"] == Status.FAILED and info["result"].startswith("Engine lost:"), info
        info = poll(store, batch[1], is_finished, ENGINE_LOST_WITHIN + SLACK)  # lost with it, or run by the new one
        assert info["status"] == Status.SUCCESS or info["result"].startswith("Engine lost:"), info

        busy = run_moi("submit", "--cmd", "import time; time.sleep(300)", env=embedded).stdout.split()[-1]
        assert poll(store, busy, running, 60)["status"] == Status.RUNNING
        queued = run_moi("submit", "--cmd", "return 1", env=embedded).stdout.split()[-1]
        assert store.get(queued)["status"] == Status.QUEUED
    finally:
        runtime.stop(state)

    # The whole cluster is gone, and its supervisor with it: `moi watchdog`, as a user runs it, fails the
    # running job; the queued one never left moi's queue, so it waits for the cluster to come back.
    watching = subprocess.Popen([sys.executable, "-m", "moi", "watchdog"], stdout=subprocess.PIPE, text=True)
    try:
        assert watching.stdout is not None and watching.stdout.readline().startswith("watching jobs in redis://")
        poll(store, busy, is_finished, ENGINE_LOST_WITHIN + SLACK)
    finally:
        watching.send_signal(signal.SIGINT)  # Ctrl-C
        assert watching.wait(30) == 0
    assert store.get(busy)["result"].startswith("Engine lost:"), store.get(busy)
    assert store.get(queued)["status"] == Status.QUEUED

    try:  # the cluster comes back (the next command starts the runtime): the queued job runs, once
        again = run_moi("submit", "--cmd", "return 2", "--block", env=embedded, timeout=240)
        assert "status\t\t: Success" in again.stdout, again
        info = poll(store, queued, is_finished, 60)
        assert (info["status"], info["result"]) == (Status.SUCCESS, 1), info
    finally:
        runtime.stop(state)


def test_redis_restart_mid_job_loses_nothing_and_cli_names_redis(own_redis, tmp_path) -> None:
    url, port, servers = own_redis
    store = moi.jobs.connections.store()
    mark = tmp_path / "finished"
    job_id, _, _ = submit("default", "outage", "survives", None, fault_jobs.sleep_then_touch, 1.5, str(mark))
    assert poll(store, job_id, running, 60)["status"] == Status.RUNNING

    with contextlib.suppress(redis.ConnectionError):  # the server goes away as it answers
        redis.Redis.from_url(url).shutdown(save=True)  # a real stop, keeping the data on disk
    servers[0].wait(10)
    down = run_moi("job", "--job-id", job_id)
    assert down.returncode == 1
    assert down.stderr.startswith(f"Redis is unreachable at {url}") and down.stderr.count("\n") == 1, down

    deadline = time.monotonic() + 60
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mark.exists()  # the job ended while Redis was down: its final write is retrying
    time.sleep(1)
    servers.append(redis_server.start_redis(tmp_path / "redis", port)[0])

    info = finished(job_id, timeout=90)
    assert info["status"] == Status.SUCCESS and info["result"] == 1.5, info


# honest states: random action sequences from stale copies --------------------------------


def _act(store, job_id: str, action: str, known: Info) -> None:
    tracker = _Tracker(store, job_id, known)
    if action == "start":
        store.update(job_id, _starter("host:1"), known)
    elif action == "cancel_queued":
        store.update(job_id, _cancel_if_queued, known)
    elif action == "status":
        tracker.status_update("step")
    elif action == "lost":
        Watchdog(store)._fail(known, "Engine lost: test")
    else:
        tracker.finish(Status(action), action.lower(), "text")


ACTIONS = ["start", "cancel_queued", "status", "lost", *[str(s) for s in (Status.SUCCESS, Status.FAILED)]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 50)), max_size=20))
def test_random_actions_from_stale_copies_never_reopen_a_finished_job(store, steps) -> None:
    group = store.ensure_group("honest")
    info = new_info("job-" + os.urandom(8).hex(), "j", "job", "c", parent=group)
    store.add_nodes(group, [info])
    seen = [info]  # every version so far: actions start from any of them, stale or not
    for action, pick in steps:
        before = store.get(info["id"])
        _act(store, info["id"], action, seen[pick % len(seen)])
        after = store.get(info["id"])
        if is_finished(before):
            assert after == before  # terminal states are final
        elif after != before:
            assert after["revision"] == before["revision"] + 1
        seen.append(after)
    revisions = [version["revision"] for version in seen]
    assert revisions == sorted(revisions)


def test_task_the_engine_cannot_load_does_not_stay_queued(store, tmp_path, monkeypatch) -> None:
    # An argument of a class only this process can import: the engine fails the task before moi's code runs.
    (tmp_path / "only_here_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_mod  # type: ignore[import-not-found]

    job_id, _, _ = submit("default", "loader", "unloadable", None, jobs.add, only_here_mod.Thing(), 1)
    info = finished(job_id)
    assert info["status"] == Status.FAILED and info["result"].startswith("Never started:"), info
    assert "only_here_mod" in info["result"]


def test_an_id_with_a_newline_cannot_forge_a_watchdog_log_line(store, r, caplog) -> None:
    forged = "job\n2026-12-01 moi.compute.watchdog WARNING all jobs deleted"
    info = new_info(forged, "j", "job", store.keys.channel(forged))
    r.set(store.keys.info(forged), json.dumps(info))
    r.sadd(store.keys.running, forged)  # taken by an engine that never beat
    with caplog.at_level(logging.WARNING, logger="moi.watchdog"):
        assert Watchdog(store, grace=0).check() == [forged]
    lines = [record.getMessage() for record in caplog.records]
    assert lines and all("\n" not in line for line in lines), lines
    assert any("job\\n2026-12-01" in line for line in lines), lines


def test_an_engines_heartbeat_lives_10_s_unless_its_environment_says_otherwise(monkeypatch) -> None:
    monkeypatch.delenv("MOI_HEARTBEAT_TTL", raising=False)
    assert heartbeats.heartbeat_ttl() == heartbeats.HEARTBEAT_TTL == 10  # production's, unchanged
    for text, life in (("4", 4), ("30", 30), ("1", 2), ("0", 2), ("ten", 10)):  # never under two beats
        monkeypatch.setenv("MOI_HEARTBEAT_TTL", text)
        assert heartbeats.heartbeat_ttl() == life, text
