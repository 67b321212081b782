"""moi's own queue: priorities, the handle, a long job beside short ones, clusters that come and go.

The session's real Redis and real cluster (two engines), and for the clusters that
come and go a real ipyparallel cluster of the test's own. No timing assertions: each
wait is a bound on a hang.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import moi
from moi.errors import InvalidPriority, JobCancelled
from moi.info import Status
from moi.job import cancel, get_info, submit
from tests import jobs, queue_jobs
from tests.conftest import finished, nothing_stored, run_moi

WAIT = 120  # seconds: a bound on a hang, never an assertion on time


def wait_status(job_id: str, status: str, timeout: float = WAIT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (info := get_info(job_id))["status"] != status:
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    return info


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_higher_priority_job_starts_first_and_equal_ones_in_order(r, tmp_path: Path) -> None:
    first, second = tmp_path / "release-1", tmp_path / "release-2"
    holders = [submit("default", "prio", "hold", None, queue_jobs.hold, str(path))[0] for path in (first, second)]
    for job_id in holders:
        wait_status(job_id, Status.RUNNING)  # both engines are busy
    log = tmp_path / "order"
    order = [
        ("low-1", "low"),
        ("normal-1", None),
        ("high-1", "high"),
        ("low-2", "low"),
        ("high-2", "high"),
        ("normal-2", "normal"),
        ("top", 7),
    ]
    submitted = [
        submit("default", "prio", label, None, queue_jobs.record, str(log), label, priority=level)[0]
        for label, level in order
    ]
    assert [get_info(job_id)["priority"] for job_id in submitted] == [-1, 0, 1, -1, 1, 0, 7]

    first.touch()  # one engine free: it takes the queue one job at a time, by priority
    for job_id in submitted:
        finished(job_id)
    second.touch()
    assert lines(log) == ["top", "high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]


def test_a_priority_moi_cannot_use_is_refused_in_one_line(r) -> None:
    for bad in ("urgent", 10_000, "1.5", True):
        with pytest.raises(InvalidPriority, match="give low, normal, high or an integer"):
            submit("default", "prio", "bad", None, jobs.add, 1, 2, priority=bad)
    assert nothing_stored(r)
    done = run_moi("submit", "--cmd", "return 1", "--priority", "urgent")
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().startswith("Priority 'urgent' is refused"), done.stderr
    done = run_moi("submit", "--cmd", "return 1", "--priority", "high", "--block")
    assert "priority\t: 1" in done.stdout and "status\t\t: Success" in done.stdout, done.stdout


def test_short_jobs_run_while_a_long_one_holds_an_engine(r, tmp_path: Path) -> None:
    release = tmp_path / "release"
    long_job, _, _ = submit("default", "mixed", "long", None, queue_jobs.hold, str(release))
    wait_status(long_job, Status.RUNNING)
    short = [submit("default", "mixed", f"short {n}", None, jobs.add, n, 1)[0] for n in range(20)]

    assert [finished(job_id)["result"] for job_id in short] == [n + 1 for n in range(20)]
    assert get_info(long_job)["status"] == Status.RUNNING  # all 20 ran beside it, on the other engine
    release.touch()
    assert finished(long_job)["status"] == Status.SUCCESS


def test_the_handle_waits_and_gets_the_value_or_the_error(r, tmp_path: Path) -> None:
    release = tmp_path / "release"
    job_id, _, handle = submit("default", "handles", "held", None, queue_jobs.hold, str(release))
    assert handle.job_id == job_id
    assert not handle.wait(0.2) and not handle.ready() and not handle.successful()
    with pytest.raises(TimeoutError, match=f"job {job_id} still"):
        handle.get(timeout=0.2)
    release.touch()
    assert handle.get(timeout=WAIT) == "released"
    assert handle.ready() and handle.successful() and handle.wait(0)

    _, _, as_set = submit("default", "handles", "a set", None, queue_jobs.a_set)
    assert as_set.get(timeout=WAIT) == {1, 2, 3}  # the object itself, though its info holds its repr
    _, _, refused = submit("default", "handles", "refused", None, queue_jobs.refuse)
    with pytest.raises(queue_jobs.Refused, match="not today"):
        refused.get(timeout=WAIT)
    assert refused.ready() and not refused.successful()


def test_a_cancelled_queued_job_is_never_taken(r, tmp_path: Path) -> None:
    releases = [tmp_path / "release-1", tmp_path / "release-2"]
    holders = [submit("default", "cancels", "hold", None, queue_jobs.hold, str(path))[0] for path in releases]
    for job_id in holders:
        wait_status(job_id, Status.RUNNING)
    log = tmp_path / "ran"
    queued, _, handle = submit("default", "cancels", "never", None, queue_jobs.record, str(log), "never")
    after, _, _ = submit("default", "cancels", "after", None, queue_jobs.record, str(log), "after")

    assert cancel(queued).cancelled == [queued]
    for path in releases:
        path.touch()
    assert finished(after)["status"] == Status.SUCCESS
    with pytest.raises(JobCancelled):
        handle.get(timeout=WAIT)
    assert lines(log) == ["after"]


# clusters that come and go ------------------------------------------------------------------------


class OwnCluster:
    """An ipyparallel cluster of the test's own, started and stopped as its operator would."""

    def __init__(self, profile_dir: Path, engines: int = 2) -> None:
        self.profile_dir = profile_dir
        self.engines = engines
        self.url_file = profile_dir / "security" / "ipcontroller-queuetest-client.json"
        self.cluster = self._new()

    def _new(self) -> Any:
        import ipyparallel

        return ipyparallel.Cluster(n=self.engines, profile_dir=str(self.profile_dir), cluster_id="queuetest")

    def start(self) -> None:
        self.cluster.start_cluster_sync()
        client = self.cluster.connect_client_sync()
        client.wait_for_engines(self.engines, timeout=WAIT)
        client.close()

    def kill_controller(self) -> None:
        os.kill(self.cluster.controller.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        self.cluster.stop_cluster_sync()

    def restart(self) -> None:
        """Stopped (what a killed controller left behind cleaned up), then a new controller started."""
        self.stop()
        for leftover in self.url_file.parent.glob("ipcontroller-queuetest-*.json"):
            leftover.unlink()
        self.cluster = self._new()
        self.start()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[OwnCluster]:
    cluster = OwnCluster(tmp_path / "ipython")
    moi.configure(contexts=f"default={os.environ['MOI_CONTEXTS'].split('=', 1)[1]},later={cluster.url_file}")
    try:
        yield cluster
    finally:
        moi.connections._overrides.clear()
        moi.connections.reset()
        cluster.stop()


def test_a_job_submitted_before_its_cluster_starts_runs_once_it_is_up(r, own_cluster: OwnCluster) -> None:
    job_id, _, handle = submit("later", "early", "before the cluster", None, jobs.add, 20, 22)

    info = get_info(job_id)
    assert info["status"] == Status.QUEUED
    assert info["waiting"] == "for the cluster of context 'later', not seen online yet"
    own_cluster.start()
    assert handle.get(timeout=WAIT) == 42
    assert "waiting" not in get_info(job_id)


def test_a_controller_killed_with_jobs_queued_loses_none_and_runs_none_twice(
    r, own_cluster: OwnCluster, tmp_path: Path
) -> None:
    own_cluster.start()
    release = tmp_path / "never"
    holders = [submit("later", "restart", "hold", None, queue_jobs.hold, str(release))[0] for _ in range(2)]
    for job_id in holders:
        wait_status(job_id, Status.RUNNING)
    log = tmp_path / "runs"
    queued = [submit("later", "restart", f"job {n}", None, queue_jobs.record, str(log), str(n))[0] for n in range(20)]

    own_cluster.kill_controller()
    own_cluster.restart()  # its engines go with it (the two running jobs are lost); a new controller, a new key

    for job_id in queued:
        assert finished(job_id)["status"] == Status.SUCCESS
    assert sorted(lines(log), key=int) == [str(n) for n in range(20)]  # each ran exactly once
    for job_id in holders:
        info = finished(job_id)
        assert info["status"] == Status.FAILED and info["result"].startswith("Engine lost:"), info
