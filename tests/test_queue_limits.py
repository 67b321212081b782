"""Per-user limits, relaunch, the chooser and `moi status` of moi's queue, with the real parts.

The session's real Redis and cluster. No timing assertions: each wait is a bound on a hang.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import moi
from moi.core.info import Status
from moi.errors import ConfigError, QuotaExceeded, UnknownContext, WrongState
from moi.job import get_info, relaunch, submit
from moi.jobs.submit import KEPT_RELAUNCHES
from tests import jobs, queue_jobs
from tests.conftest import finished, run_moi
from tests.test_queue import wait_status

WAIT = 120  # seconds: a bound on a hang, never an assertion on time


@pytest.fixture
def limited() -> Any:
    def configure(**limits: int) -> None:
        moi.configure(**limits)

    yield configure
    moi.storage.process._overrides.clear()
    moi.jobs.connections.reset()


def hold(user: str, release: Path, **options: Any) -> str:
    return submit("default", user, "hold", None, queue_jobs.hold, str(release), **options)[0]


def test_fifty_concurrent_submits_against_a_hard_limit_of_ten_admit_exactly_ten(r, limited, tmp_path: Path) -> None:
    limited(hard_limit=10)
    release = tmp_path / "release"
    admitted: list[str] = []
    refused: list[QuotaExceeded] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            job_id = hold("hoarder", release)
        except QuotaExceeded as error:
            with lock:
                refused.append(error)
        else:
            with lock:
                admitted.append(job_id)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert (len(admitted), len(refused)) == (10, 40)
    assert str(refused[0]) == (
        "User hoarder has 10 unfinished jobs and the limit is 10: wait for some to finish, or cancel some"
    )
    other = hold("someone-else", release)  # another user is not limited by this one
    release.touch()
    for job_id in [*admitted, other]:
        assert finished(job_id)["status"] == Status.SUCCESS
    assert finished(hold("hoarder", release))["status"] == Status.SUCCESS  # finished jobs no longer count


def test_the_hard_limit_in_the_cli_is_one_line(r, tmp_path: Path) -> None:
    env = {"MOI_HARD_LIMIT": "1"}
    release = tmp_path / "release"
    first = run_moi(
        "submit",
        "--user",
        "cli-hog",
        "--cmd",
        f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)",
        env=env,
    )
    assert first.returncode == 0, first.stderr
    second = run_moi("submit", "--user", "cli-hog", "--cmd", "return 1", env=env)
    assert (second.returncode, second.stdout) == (1, "")
    assert (
        second.stderr
        == "User cli-hog has 1 unfinished jobs and the limit is 1: wait for some to finish, or cancel some\n"
    )
    release.touch()


def test_a_hog_gets_its_next_jobs_no_higher_than_low(r, limited, tmp_path: Path) -> None:
    limited(hog_size=2)
    release = tmp_path / "release"
    ids = [hold("hog", release, priority="high") for _ in range(4)]

    assert [get_info(job_id)["priority"] for job_id in ids] == [1, 1, -1, -1]
    release.touch()
    for job_id in ids:
        finished(job_id)


def test_a_relaunch_runs_the_same_call_again_beside_the_old_job(r, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    old, group, _ = submit("default", "again", "recorded", "/r", queue_jobs.record, str(log), "once", priority=5)
    assert finished(old)["status"] == Status.SUCCESS

    new, new_group, handle = relaunch(old)

    assert handle.get(timeout=WAIT) == "once"
    info = get_info(new)
    assert (info["relaunch_of"], info["parent"], info["name"], info["url"], info["priority"]) == (
        old,
        group,
        "recorded",
        "/r",
        5,
    )
    assert new_group == group and get_info(old)["status"] == Status.SUCCESS  # the old one is kept
    assert log.read_text().split() == ["once", "once"]
    done = run_moi("relaunch", "--job-id", old)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Relaunched job id: ") and done.stdout.strip().endswith(f"(relaunch of {old})")
    relaunched = done.stdout.split()[3]
    assert get_info(old)["relaunched_as"] == [new, relaunched] and get_info(old)["relaunch_count"] == 2

    # Relaunched without end, the original keeps its newest links and a count: a document of bounded size.
    store = moi.jobs.connections.store()
    earlier = [f"earlier-{n}" for n in range(KEPT_RELAUNCHES)]
    store.update(old, lambda info: {**info, "relaunched_as": earlier, "relaunch_count": 500})
    newest, _, _ = relaunch(old)
    info = get_info(old)
    assert info["relaunched_as"] == [*earlier[1:], newest] and info["relaunch_count"] == 501


def test_relaunch_refuses_what_has_not_finished_in_one_line(r, tmp_path: Path) -> None:
    release = tmp_path / "release"
    running = hold("again", release)
    wait_status(running, Status.RUNNING)
    with pytest.raises(WrongState, match="is still Running; wait for it or cancel it first"):
        relaunch(running)
    done = run_moi("relaunch", "--job-id", running)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "cannot be relaunched" in done.stderr
    release.touch()
    finished(running)


def choose(name: str, user: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return "default" if args and args[0] == 1 else "nowhere"


def test_a_chooser_picks_each_jobs_context(r, limited) -> None:
    job_id, _, handle = submit(choose, "chosen", "x", None, jobs.add, 1, 2)
    assert handle.get(timeout=WAIT) == 3 and get_info(job_id)["context"] == "default"
    with pytest.raises(UnknownContext, match="'nowhere'"):
        submit(choose, "chosen", "x", None, jobs.add, 2, 2)

    limited(chooser="tests.test_queue_limits:choose")
    job_id, _, handle = submit(None, "chosen", "x", None, jobs.add, 1, 5)
    assert handle.get(timeout=WAIT) == 6
    limited(chooser="tests.nowhere:choose")
    with pytest.raises(ConfigError, match="cannot be imported"):
        submit(None, "chosen", "x", None, jobs.add, 1, 5)


def test_moi_status_shows_each_context_online_or_offline_with_its_queue(r, tmp_path: Path) -> None:
    submit("default", "status", "x", None, jobs.add, 1, 2)[2].get(timeout=WAIT)  # a dispatcher saw it online
    contexts = f"{moi.jobs.connections.settings().contexts['default'].url_file}"
    env = {"MOI_CONTEXTS": f"default={contexts},offline={tmp_path / 'none.json'}"}
    submit_offline = run_moi("submit", "--cmd", "return 1", "--context", "offline", env=env)
    assert submit_offline.returncode == 0, submit_offline.stderr

    lines = run_moi("status", env=env).stdout.splitlines()

    assert any(line.startswith("context default: online, 2 engines, 0 queued") for line in lines), lines
    assert "context offline: offline, 1 queued" in lines, lines
    assert json.loads(r.get("moi:online:default"))["engines"] == 2


def test_a_batch_counts_against_the_limits_and_past_the_hard_one_is_refused_whole(
    r, store, limited, tmp_path: Path
) -> None:
    from moi.jobs.batch import submit_many

    limited(hard_limit=3)
    release = tmp_path / "release"
    with pytest.raises(QuotaExceeded, match="has 0 unfinished jobs and the limit is 3: a batch of 4 would pass it"):
        submit_many("default", "sweeper", "too many", None, queue_jobs.hold, [str(release)] * 4)
    assert not store.descendant_jobs(store.group_id("sweeper"))  # nothing of it stored

    job_ids, _, batch = submit_many("default", "sweeper", "fits", None, queue_jobs.hold, [str(release)] * 3)
    with pytest.raises(QuotaExceeded, match="has 3 unfinished jobs and the limit is 3"):
        hold("sweeper", release)  # its items count like any job
    release.touch()
    assert batch.get(timeout=WAIT) == ["released"] * 3
    assert finished(hold("sweeper", release))["status"] == Status.SUCCESS  # finished items count no more
