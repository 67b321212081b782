"""moi's own queue: priorities, the handle, a long job beside short ones, clusters that come and go.

The session's real Redis and real cluster (two engines), and for the clusters that
come and go a real ipyparallel cluster of the test's own. No timing assertions: each
wait is a bound on a hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import moi
from moi.core.info import Status
from moi.errors import InvalidPriority, JobCancelled
from moi.job import cancel, get_info, submit
from tests import jobs, queue_jobs
from tests.conftest import QUICK_CONTROLLER, finished, nothing_stored, quick_stop, run_moi

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
    """An ipyparallel cluster of the module's own, started and stopped as its operator would."""

    def __init__(self, profile_dir: Path, engines: int = 2) -> None:
        self.profile_dir = profile_dir
        self.engines = engines
        self.url_file = profile_dir / "security" / "ipcontroller-queuetest-client.json"
        self.cluster = self._new()
        self.running = False

    def _new(self) -> Any:
        import ipyparallel

        profile = str(self.profile_dir)
        return ipyparallel.Cluster(
            n=self.engines,
            profile_dir=profile,
            cluster_id="queuetest",
            config=quick_stop(),
            controller_args=QUICK_CONTROLLER,
        )

    def start(self) -> None:
        self.cluster.start_cluster_sync()
        client = self.cluster.connect_client_sync()
        client.wait_for_engines(self.engines, timeout=WAIT)
        client.close()
        self.running = True

    def started(self) -> None:
        """Running, as an earlier test may have left it (one start less: each takes seconds)."""
        if not self.running:
            self.start()

    def not_started(self) -> None:
        """Stopped, as a later test may want it, if an earlier one started it."""
        if self.running:
            self.stop()
            self.cluster = self._new()

    def kill_controller(self) -> None:
        """SIGKILL the controller and its scheduler processes (left alone, they would outlive the tests)."""
        pid = self.cluster.controller.process.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for doomed in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(doomed, signal.SIGKILL)

    def stop(self) -> None:
        self.cluster.stop_cluster_sync()
        self.running = False

    def restart(self) -> None:
        """Stopped (what a killed controller left behind cleaned up), then a new controller started."""
        self.stop()
        for leftover in self.url_file.parent.glob("ipcontroller-queuetest-*.json"):
            leftover.unlink()
        self.cluster = self._new()
        self.start()


@pytest.fixture(scope="module")
def later_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnCluster]:
    """One cluster for the module's tests of context ``later``: each finds it as the one before left it."""
    cluster = OwnCluster(tmp_path_factory.mktemp("later") / "ipython")
    yield cluster
    if cluster.running:
        cluster.stop()


@pytest.fixture
def own_cluster(later_cluster: OwnCluster) -> Iterator[OwnCluster]:
    moi.configure(contexts=f"default={os.environ['MOI_CONTEXTS'].split('=', 1)[1]},later={later_cluster.url_file}")
    try:
        yield later_cluster
    finally:
        moi.storage.process._overrides.clear()
        moi.jobs.connections.reset()


def test_a_job_submitted_before_its_cluster_starts_runs_once_it_is_up(r, own_cluster: OwnCluster) -> None:
    own_cluster.not_started()
    job_id, _, handle = submit("later", "early", "before the cluster", None, jobs.add, 20, 22)

    info = get_info(job_id)
    assert info["status"] == Status.QUEUED
    assert info["waiting"] == "for the cluster of context 'later', not seen online yet"
    own_cluster.start()
    assert handle.get(timeout=WAIT) == 42
    assert "waiting" not in get_info(job_id)


@pytest.mark.slow
def test_a_controller_killed_with_jobs_queued_loses_none_and_runs_none_twice(
    r, own_cluster: OwnCluster, tmp_path: Path
) -> None:
    own_cluster.started()
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


def test_a_running_batch_item_is_cancelled_like_any_job(r, tmp_path: Path) -> None:
    from moi.jobs.batch import submit_many

    release = tmp_path / "never"
    job_ids, _, batch = submit_many("default", "sweeper", "sweep", None, queue_jobs.hold, [str(release)] * 2)
    for job_id in job_ids:
        wait_status(job_id, Status.RUNNING)

    report = cancel(job_ids[0])

    assert report.requested == [job_ids[0]]
    info = finished(job_ids[0])
    assert (info["status"], info["result"]) == (Status.CANCELLED, "Cancelled while running")
    assert get_info(job_ids[1])["status"] == Status.RUNNING  # its neighbour goes on
    release.touch()
    assert batch.get(timeout=WAIT) == [None, "released"]


def test_a_block_holds_one_batchs_items_and_gives_back_those_not_started(r, store) -> None:
    # No engine works for this context: the test takes and gives back as an engine would.
    from moi.core.info import new_id, new_info
    from moi.queue.jobqueue import Queue, item_call

    queue, batch_id, label = Queue(store), new_id(), "elsewhere:1"

    def job(name: str, call: str) -> tuple[dict[str, Any], str, int]:
        job_id = new_id()
        return new_info(job_id, name, "job", store.keys.channel(job_id), context="nowhere"), call, 0

    items = [job(f"sweep [{index}]", item_call(batch_id, (index,))) for index in range(3)]
    alone = job("alone", "not a batch item")
    queue.enqueue("blocker", "nowhere", [*items, alone])
    ids = [info["id"] for info, _, _ in items]

    first = queue.take("nowhere", label, 10)  # no pace known yet: one item
    rest = queue.take("nowhere", label, 10, most=10, batch=batch_id)  # the batch's items, not the job after them
    assert [taken.info["id"] for taken in first + rest] == ids
    for job_id in ids:  # taken, not started: the engine marks each Running as it starts it
        assert get_info(job_id)["status"] == Status.QUEUED and r.zscore(store.keys.queue("nowhere"), job_id) is None
        assert r.get(store.keys.heartbeat(job_id)) == label and r.sismember(store.keys.running, job_id)

    assert cancel(ids[1]).requested == [ids[1]]  # taken: the cancel is asked of its engine
    assert get_info(ids[1])["status"] == Status.QUEUED
    assert queue.release("nowhere", label, rest) == 1
    cancelled, back = get_info(ids[1]), get_info(ids[2])
    assert (cancelled["status"], cancelled["result"]) == (Status.CANCELLED, "Cancelled before it started")
    assert back["status"] == Status.QUEUED and r.zscore(store.keys.queue("nowhere"), ids[2]) is not None
    for job_id in ids[1:]:
        assert not r.exists(store.keys.heartbeat(job_id), store.keys.cancel(job_id))
        assert not r.sismember(store.keys.running, job_id)
    assert queue.release("nowhere", "another:2", first) == 0  # only the engine that took a job gives it back

    again = queue.take("nowhere", label, 10, most=10, batch=batch_id)
    assert [taken.info["id"] for taken in again] == [ids[2]]  # at its old place, before the job after it
    last = queue.take("nowhere", label, 10, most=10, batch=batch_id)
    assert [taken.info["id"] for taken in last] == [alone[0]["id"]]
    assert get_info(alone[0]["id"])["status"] == Status.RUNNING  # a job of its own is Running once taken


def test_a_long_batch_item_holds_no_short_ones_behind_it(r, tmp_path: Path) -> None:
    from moi.jobs.batch import submit_many

    release, log = tmp_path / "release", tmp_path / "ran"
    items = [(str(log), f"quick-{index}") for index in range(3)] + [(str(release),)]
    items += [(str(log), f"late-{index}") for index in range(6)]
    job_ids, _, batch = submit_many("default", "sweeper", "mixed", None, queue_jobs.hold_or_record, items)

    # Whichever engine took the long item, the items taken with it go back to the queue and run elsewhere.
    for job_id in job_ids[:3] + job_ids[4:]:
        assert finished(job_id, timeout=WAIT)["status"] == Status.SUCCESS
    assert get_info(job_ids[3])["status"] == Status.RUNNING
    release.touch()
    assert batch.get(timeout=WAIT)[3] == "released"
    assert sorted(lines(log)) == sorted([f"quick-{index}" for index in range(3)] + [f"late-{i}" for i in range(6)])


def test_a_batch_item_is_relaunched_with_its_own_arguments(r) -> None:
    from moi.job import relaunch
    from moi.jobs.batch import submit_many

    job_ids, _, batch = submit_many("default", "sweeper", "ratios", None, queue_jobs.divide, [(6, 3), (1, 0)])
    assert batch.get(timeout=WAIT) == [2.0, None]

    new_id, _, handle = relaunch(job_ids[0])
    assert handle.get(timeout=WAIT) == 2.0
    assert get_info(new_id)["relaunch_of"] == job_ids[0]
    _, _, failing = relaunch(job_ids[1])
    with pytest.raises(ZeroDivisionError):
        failing.get(timeout=WAIT)
