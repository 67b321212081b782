"""Fair priorities: a user's ceiling over the API, a hog's jobs below everyone's normal ones, turns between users.

The session's real Redis, cluster (two engines) and a real Tornado server. Order is measured by the
order the jobs start on one engine (each appends its label to a file), never by time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import moi
from moi import services
from moi.core.config import build_settings
from moi.core.info import Status
from moi.errors import ConfigError
from moi.job import get_info, submit
from moi.jobs import connections
from moi.services.resubmission import resubmit
from moi.storage import tokens
from tests import queue_jobs, service_defs
from tests.conftest import finished
from tests.test_api import call, payload
from tests.test_queue import lines, wait_status
from tests.test_relay_security import server


@pytest.fixture
def configured() -> Any:
    yield moi.configure
    moi.storage.process._overrides.clear()
    moi.jobs.connections.reset()


def test_a_users_priority_has_a_ceiling_over_the_api_and_an_admin_has_none(r, configured) -> None:
    user, admin = tokens.create(connections.store(), "uma"), tokens.create(connections.store(), "ops", admin=True)

    async def asked(port: int, token: str, priority: Any) -> dict[str, Any]:
        body = {"service": "no-such-service", "priority": priority}  # the ceiling is checked before the service
        answer = await call(port, "POST", "/api/v1/jobs", token, body)
        assert answer.code == 422, answer.body
        return dict(payload(answer))

    async def scenario() -> None:
        async with server() as port:
            for priority in (1000, "high", 1):
                assert await asked(port, user, priority) == {
                    "error": f"Priority {priority!r} is refused: a user's jobs go at priority 0 at most",
                    "code": "invalid",
                }
            for priority in ("normal", "low", -3, None):  # at or under the ceiling: on to the service, unknown
                assert (await asked(port, user, priority))["code"] == "unknown_service"
            assert (await asked(port, admin, 1000))["code"] == "unknown_service"
            configured(max_user_priority=5)
            assert (await asked(port, user, 5))["code"] == "unknown_service"
            assert (await asked(port, user, 6))["code"] == "invalid"

    asyncio.run(scenario())
    with pytest.raises(ConfigError, match="max_user_priority must be from -1000 to 1000, not 1001"):
        build_settings({"max_user_priority": 1001})


def test_one_users_high_jobs_do_not_starve_another_users_normal_ones(r, configured, tmp_path: Path) -> None:
    """hog_size 3: a hog's five priority-1000 jobs (the library may ask for any) are three at 1000 and two
    at low; two other users' normal jobs take turns between them, the later user's job before the
    earlier user's second; the order is that of one engine taking the queue a job at a time."""
    configured(hog_size=3, hard_limit=10)
    first, second = tmp_path / "release-1", tmp_path / "release-2"
    holders = [submit("default", "holder", "hold", None, queue_jobs.hold, str(path))[0] for path in (first, second)]
    for job_id in holders:
        wait_status(job_id, Status.RUNNING)  # both engines are busy: the rest waits in the queue
    log = tmp_path / "order"

    def job(user: str, label: str, priority: Any = None) -> str:
        return submit("default", user, label, None, queue_jobs.record, str(log), label, priority=priority)[0]

    hogs = [job("hog", f"hog-{n}", 1000) for n in range(1, 6)]
    meek = [job("meek", "meek-1"), job("meek", "meek-2")]
    late = job("late", "late-1")
    assert [get_info(job_id)["priority"] for job_id in hogs] == [1000, 1000, 1000, -1, -1]

    first.touch()  # one engine free: it takes the queue one job at a time
    for job_id in [*hogs, *meek, late]:
        finished(job_id)
    second.touch()
    started = lines(log)
    assert started[:3] == ["hog-1", "hog-2", "hog-3"]
    assert sorted(started[3:5]) == ["late-1", "meek-1"]  # one turn each: the later user goes before meek's second
    assert started[5:] == ["meek-2", "hog-4", "hog-5"]  # the hog's jobs past hog_size after every normal one


def test_a_job_at_a_higher_priority_does_not_move_the_normal_jobs_turns_past_its_owners_backlog(
    r, tmp_path: Path
) -> None:
    """A user with three normal jobs waiting sends one at priority 5: it is taken first (and its turn is
    after their backlog). Another user's normal job sent then still goes next but one, not behind the
    whole backlog: each priority keeps its own clock. Order is that of one engine taking the queue."""
    first, second, third = tmp_path / "release-1", tmp_path / "release-2", tmp_path / "release-3"
    holders = [submit("default", "holder", "hold", None, queue_jobs.hold, str(path))[0] for path in (first, second)]
    for job_id in holders:
        wait_status(job_id, Status.RUNNING)
    log = tmp_path / "order"
    backlog = [
        submit("default", "pusher", label, None, queue_jobs.record, str(log), label)[0]
        for label in ("pusher-1", "pusher-2", "pusher-3")
    ]
    high = submit("default", "pusher", "high", None, queue_jobs.hold, str(third), priority=5)[0]
    first.touch()
    wait_status(high, Status.RUNNING)  # taken before the backlog, its turn after it
    newcomer = submit("default", "newcomer", "newcomer-1", None, queue_jobs.record, str(log), "newcomer-1")[0]
    second.touch()  # the other engine takes the normal jobs one at a time
    for job_id in [*backlog, newcomer]:
        finished(job_id)
    third.touch()
    finished(high)
    started = lines(log)
    assert "newcomer-1" in started[:2], started  # it used to start last, after the whole backlog
    assert [label for label in started if label.startswith("pusher")] == ["pusher-1", "pusher-2", "pusher-3"]


def test_a_resubmitted_job_takes_its_owners_turn(r, tmp_path: Path) -> None:
    """As a new one would: after the job its owner has waiting, and before the end of another user's backlog
    (not at the clock, before its owner's job, nor after everything queued)."""
    services.register(service_defs.Recording)
    failed = services.submit("recording", "resender", {"fail_in": "run"})[0]
    assert finished(failed)["status"] == Status.FAILED
    releases = [tmp_path / "release-1", tmp_path / "release-2"]
    holders = [submit("default", "holder", "hold", None, queue_jobs.hold, str(path))[0] for path in releases]
    waiting: list[str] = []
    try:
        for job_id in holders:
            wait_status(job_id, Status.RUNNING)
        for user in ("crowd", "crowd", "crowd", "resender"):
            waiting.append(submit("default", user, "w", None, queue_jobs.record, str(tmp_path / "log"), "w")[0])
        resubmit(failed)
        queue = connections.store().keys.queue("default")
        crowd_last, resenders, resubmitted = (r.zscore(queue, job_id) for job_id in [waiting[2], waiting[3], failed])
        assert resenders < resubmitted < crowd_last, (resenders, resubmitted, crowd_last)
    finally:
        for path in releases:
            path.touch()
        for job_id in [*holders, *waiting, failed]:
            finished(job_id)
        services.unregister("recording")


def test_fair_share_turns_that_are_not_numbers_stop_no_submit_and_no_take(r, store) -> None:
    """Turns written behind moi's back (not numbers) count as unset: jobs are still queued and taken."""
    from moi.errors import CodeRefused
    from moi.jobs.grant import placement
    from tests.jobs import add

    job_id, group_id, _ = submit(None, "turns", "first", None, add, 1, 2)
    finished(job_id)
    r.set(store.keys.fair_clock("default", 0), "not a turn")
    r.set(store.keys.fair_last("default", group_id, 0), "1e999")
    job_id, _, _ = submit(None, "turns", "after the bad turns", None, add, 40, 2)
    assert (finished(job_id)["status"], finished(job_id)["result"]) == (Status.SUCCESS, 42)
    # The same for a code uid kept in Redis: one line, not a traceback.
    r.hset(store.keys.code_uids, "turns", "not a uid")
    with pytest.raises(CodeRefused, match="is not a number"):
        placement(store, "turns")
