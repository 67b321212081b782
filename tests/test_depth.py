"""No user-controlled depth can crash a walk (issue 29, point 4): a real job makes 1,200 nested
directories, and listing, counting, deleting and sweeping them all work, each without recursion.

The liveness half (the runtime's watchdog and sweeper pass over such a tree and over documents they
trip on, then a SIGKILLed engine's job is still failed on time, and the failures show in /metrics
and ``moi status``) runs in tests/test_faults.py, inside the test that already owns a cluster whose
engines may be killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from moi import files, services
from moi.core.info import Status, new_id, new_info
from moi.job import submit
from moi.jobs import connections
from moi.storage.store import Store
from tests import files_jobs
from tests.conftest import finished, run_moi, until
from tests.test_api import call, payload, token_for
from tests.test_metrics import samples
from tests.test_relay_security import server

LEVELS = 1200  # past Python's recursion limit (1,000), which the walks used to hit
BOTTOM = "output/" + "d/" * LEVELS + "bottom.txt"


def deep_job(user: str, levels: int = LEVELS) -> str:
    """A real job that makes a deep tree in its directory; it must end Success, its files counted."""
    job_id, _, _ = submit("default", user, "deep", None, files_jobs.deep_tree, levels, workdir=True)
    info = finished(job_id)
    assert (info["status"], info["result"]) == (Status.SUCCESS, levels), info
    assert info["files"] == {"count": 1, "size": 4}, info  # counted at its end: the final write landed
    return job_id


def test_a_1200_deep_tree_is_listed_deleted_and_swept(r) -> None:
    alice = token_for("alice")
    listed, deleted = deep_job("alice"), deep_job("alice")
    deeper = deep_job("alice", 2 * LEVELS)  # its paths are past what a listing shows (files.LIST_PATH_MAX)

    async def scenario() -> None:
        async with server() as port:
            for route in (f"/api/v1/jobs/{listed}/files", f"/moi-files/{listed}/", f"/moi-files/{listed}/output/d/"):
                answer = await call(port, "GET", route, alice)
                assert answer.code == 200, (route, answer.body[:300])
                paths = {entry["path"] for entry in payload(answer)["entries"]}
                assert BOTTOM in paths and sum(path.endswith("/d") for path in paths) >= LEVELS - 1, route
            bottom = await call(port, "GET", f"/api/v1/jobs/{listed}/files/{BOTTOM}", alice)
            assert (bottom.code, bottom.body) == (200, b"deep")

            refused = await call(port, "GET", f"/api/v1/jobs/{deeper}/files", alice)  # one line, not a 500
            assert refused.code == 404 and "longer than 4096 characters" in payload(refused)["error"], refused.body
            one_level = f"/api/v1/jobs/{deeper}/files/output/{'d/' * LEVELS}?recursive=0"
            inside = await call(port, "GET", one_level, alice)
            assert inside.code == 200 and [entry["path"] for entry in payload(inside)["entries"]] == [
                "output/" + "d/" * LEVELS + "d"
            ]

            directory = files.directory_of(deleted)
            assert (await call(port, "DELETE", f"/api/v1/jobs/{deleted}", alice)).code == 204
            assert not os.path.exists(directory)  # the record and the whole tree
            assert (await call(port, "GET", f"/api/v1/jobs/{deleted}", alice)).code == 404

    asyncio.run(scenario())
    assert files.summary(files.directory_of(listed)) == {"count": 1, "size": 4}

    # The job expires from Redis; the sweeper (`moi watchdog --once`, a real process) removes its deep tree.
    directory = files.directory_of(listed)
    r.delete(connections.store().keys.info(listed))
    long_ago = time.time() - 2 * files.SWEEP_GRACE
    os.utime(directory, (long_ago, long_ago))
    swept = run_moi("watchdog", "--once")
    assert swept.returncode == 0 and f"removed the files of gone job {listed}" in swept.stdout, swept
    assert not os.path.exists(directory)


def test_moi_delete_says_in_one_line_a_file_it_cannot_remove(r) -> None:
    """An immutable file (chattr +i: even root may not unlink it) in a job's tree: `moi delete` says so
    in one line, not a traceback, and deletes the files once the file may go."""
    job_id = deep_job("alice", 3)
    stuck = Path(files.directory_of(job_id), "output/d/d/d/bottom.txt")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable files (chattr +i)")
    try:
        refused = run_moi("delete", "--job-id", job_id)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused
    assert refused.stderr.strip() == (
        f"The files of job {job_id} could not all be removed: Operation not permitted (bottom.txt)"
    ), refused.stderr
    assert run_moi("delete", "--job-id", job_id).returncode == 0
    assert not os.path.exists(files.directory_of(job_id))
    r.delete(connections.store().keys.info(job_id))


# for the liveness half, in tests/test_faults.py --------------------------------------------


def gone_deep_tree(r: redis.Redis, jobs_root: Path) -> Path:
    """A real job's 1,200-deep tree under ``jobs_root``, its job then gone from Redis (as if expired) long
    enough ago that the first sweep of that root removes it; the tree's directory."""
    saved = os.environ.get("MOI_JOBS_DIR")
    os.environ["MOI_JOBS_DIR"] = str(jobs_root)
    connections.reset()
    try:
        job_id = deep_job("alice")
        directory = Path(files.directory_of(job_id))
    finally:
        if saved is None:
            del os.environ["MOI_JOBS_DIR"]
        else:
            os.environ["MOI_JOBS_DIR"] = saved
        connections.reset()
    r.delete(connections.store().keys.info(job_id))
    long_ago = time.time() - 2 * files.SWEEP_GRACE
    os.utime(directory, (long_ago, long_ago))
    return directory


PROBE_SERVICE = """
services:
  - name: depthprobe
    steps:
      - {name: only, run: "true"}
"""


def plant_tripping_documents(store: Store, r: redis.Redis) -> None:
    """Documents written straight into Redis that a watchdog and a retention sweeper each fail on, every pass."""
    services.load_into(store, PROBE_SERVICE, "depthprobe.yaml")
    stranded, expiring = new_id(), new_id()
    # Running, with no heartbeat: the watchdog fails it, and that write trips on its retention's "soon".
    info = new_info(stranded, "trips the watchdog", "job", store.keys.channel(stranded))
    info.update(status=Status.RUNNING, retention={"archive_after": "soon", "expire_after": 1})
    r.set(store.keys.info(stranded), json.dumps(info))
    r.sadd(store.keys.running, stranded)
    # Due for expiry, of a service the sweeper knows: its retention is a string, not a mapping.
    info = new_info(expiring, "trips the sweeper", "job", store.keys.channel(expiring))
    info.update(status=Status.FAILED, service="depthprobe", retention="forever")
    r.set(store.keys.info(expiring), json.dumps(info))
    r.zadd(store.keys.due("expire"), {expiring: 0})


def assert_loop_failures_shown(store: Store, r: redis.Redis) -> None:
    """The watchdog's and the sweeper's failures counted in Redis, and shown by `moi status` and /metrics."""
    until(lambda: all(r.hget(store.keys.loops, loop) for loop in ("watchdog", "sweeper")), "both failures counted")
    status = run_moi("status")
    lines = [line for line in status.stdout.splitlines() if line.startswith("loop ")]
    assert {line.split(":")[0] for line in lines} >= {"loop watchdog", "loop sweeper"}, status
    assert any("TypeError" in line for line in lines) and any("AttributeError" in line for line in lines), lines

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with server() as port:
            return samples(await call(port, "GET", "/metrics", token_for("ops", admin=True)))

    found = asyncio.run(scrape())
    for loop in ("watchdog", "sweeper"):
        assert found[("moi_loop_errors_total", (("loop", loop),))] >= 1, loop
    assert found[("moi_loop_restarts_total", (("loop", "watchdog"),))] == 0
