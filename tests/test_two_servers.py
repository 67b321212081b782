"""Two ``moi server`` processes on one Redis, on two ports and behind no balancer.

Each serves pages, the API and a websocket, and runs a watchdog, a sweeper and
dispatchers; the tests check that a user sees the same live state on both, and
that the two never act twice on one job.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moi.core.info import Status
from moi.job import submit
from moi.jobs import connections
from moi.storage import tokens
from moi.storage.redis_server import free_port
from tests import jobs
from tests.browser import Server, log_in, row, submit_cli
from tests.conftest import finished


@pytest.fixture
def servers(r: Any) -> Iterator[tuple[Server, Server]]:
    """Two servers on the session's Redis and cluster, both knowing the ``kept`` service."""
    env = {**os.environ, "MOI_SERVICES": "tests.service_defs:Kept"}
    pair = (Server(free_port(), env=env), Server(free_port(), env=env))
    for server in pair:
        server.start()
    yield pair
    for server in pair:
        server.stop()


def api(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_one_users_pages_on_two_servers_show_the_same_live_state(browser: Any, servers: tuple[Server, Server]) -> None:
    from playwright.sync_api import expect

    first, second = servers
    token = tokens.create(connections.store(), "tess", code=True)  # it submits cmd jobs
    pages = [browser.new_context().new_page() for _ in servers]
    try:
        for page, server in zip(pages, servers, strict=True):
            log_in(page, server, "tess", "/")
        with api(first, token) as through_first, api(second, token) as through_second:
            slow = through_first.post("/api/v1/jobs", json={"cmd": "import time; time.sleep(60)", "name": "slow"})
            quick = through_second.post("/api/v1/jobs", json={"cmd": "return 1", "name": "quick"})
        assert (slow.status_code, quick.status_code) == (201, 201), (slow.text, quick.text)
        slow_id, quick_id = slow.json()["id"], quick.json()["id"]
        for page in pages:  # each submitted through one server, both seen on both
            expect(row(page, quick_id).locator(".moi-status")).to_have_text("Success")
            expect(row(page, slow_id).locator(".moi-status")).to_have_text("Running")

        row(pages[1], slow_id).get_by_role("button", name="Cancel").click()  # cancelled on the second
        expect(row(pages[0], slow_id).locator(".moi-status")).to_have_text("Cancelled")  # seen on the first

        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # the first dies at once: nothing changes for the second's users
        first.proc.wait(30)
        first.proc = None
        late = submit_cli("tess", "after the first died", "return 2")
        expect(row(pages[1], late).locator(".moi-status")).to_have_text("Success")
        expect(pages[1].locator("#moi-jobs")).to_have_attribute("data-connected", "true")
        expect(pages[0].locator("#moi-jobs")).to_have_attribute("data-connected", "false")
    finally:
        for page in pages:
            page.context.close()


def test_two_servers_sweepers_run_each_hook_once(servers: tuple[Server, Server], tmp_path: Path) -> None:
    """Both servers sweep the same due jobs: every move is a compare-and-set, so each hook runs once."""
    token = tokens.create(connections.store(), "kit")
    made = []
    for index in range(12):
        with api(servers[index % 2], token) as client:
            answer = client.post("/api/v1/jobs", json={"service": "kept", "params": {"counts": str(tmp_path)}})
        assert answer.status_code == 201, answer.text
        made.append(answer.json()["id"])
    for job_id in made:
        assert finished(job_id)["status"] == Status.SUCCESS
    store = connections.store()
    deadline = time.monotonic() + 120  # archive_after and expire_after are 1 s; each server sweeps every 2 s
    while time.monotonic() < deadline and {store.get(job_id)["status"] for job_id in made} != {Status.EXPIRED}:
        time.sleep(0.5)
    assert {store.get(job_id)["status"] for job_id in made} == {Status.EXPIRED}
    for hook in ("archive", "expire"):  # hooks run as jobs of their own on an engine: the last may still run
        log = tmp_path / f"{hook}.log"
        while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < len(made)):
            time.sleep(0.5)
        called = sorted(line.split()[0] for line in log.read_text().splitlines())
        assert called == sorted(made), hook  # once per job, though two sweepers raced for each


@pytest.mark.slow
def test_a_job_whose_engine_is_gone_is_failed_once_with_two_watchdogs(servers: tuple[Server, Server], r: Any) -> None:
    """Both watchdogs see the same orphaned Running jobs; one write ends each, and each end is counted once."""
    store, keys = connections.store(), connections.store().keys
    orphans, revisions = [], []
    # Submitted here rather than by ten CLI processes (ten Python start-ups): any finished job will do.
    made = [submit("default", "lin", f"left behind {index}", None, jobs.add, 1, 2)[0] for index in range(10)]
    for job_id in made:
        info = finished(job_id)
        # What an engine killed mid-job leaves in Redis: the job Running, in the running set, no heartbeat.
        r.set(job_id, json.dumps({**info, "status": "Running", "date_end": None, "revision": info["revision"] + 1}))
        r.sadd(keys.running, job_id)
        orphans.append(job_id)
        revisions.append(info["revision"] + 1)
    deadline = time.monotonic() + 120  # each watchdog passes every 2 s and waits out the grace period
    while time.monotonic() < deadline and any(store.get(job_id)["status"] == "Running" for job_id in orphans):
        time.sleep(0.5)
    ended = [store.get(job_id) for job_id in orphans]
    assert {info["status"] for info in ended} == {Status.FAILED}
    assert all("engine" in str(info["result"]).lower() for info in ended), ended[0]["result"]
    assert [info["revision"] for info in ended] == [running + 1 for running in revisions]  # one write each
    assert r.hget(keys.tally, "Failed|") == str(len(orphans))  # counted by the ending write: one per job, not two
