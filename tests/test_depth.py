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
import time
from pathlib import Path
from typing import Any

import redis

from moi import connections, files, services
from moi.info import Status, new_info
from moi.job import submit
from tests import files_jobs
from tests.conftest import finished, run_moi
from tests.test_api import call, payload, token_for
from tests.test_relay_security import server

LEVELS = 1200  # past Python's recursion limit (1,000), which the walks used to hit
BOTTOM = "output/" + "d/" * LEVELS + "bottom.txt"


def deep_job(user: str) -> str:
    """A real job that makes the 1,200-deep tree in its directory; it must end Success, its files counted."""
    job_id, _, _ = submit("default", user, "deep", None, files_jobs.deep_tree, LEVELS, workdir=True)
    info = finished(job_id)
    assert (info["status"], info["result"]) == (Status.SUCCESS, LEVELS), info
    assert info["files"] == {"count": 1, "size": 4}, info  # counted at its end: the final write landed
    return job_id


def test_a_1200_deep_tree_is_listed_deleted_and_swept(r) -> None:
    alice = token_for("alice")
    listed, deleted = deep_job("alice"), deep_job("alice")

    async def scenario() -> None:
        async with server() as port:
            for route in (f"/api/v1/jobs/{listed}/files", f"/moi-files/{listed}/", f"/moi-files/{listed}/output/d/"):
                answer = await call(port, "GET", route, alice)
                assert answer.code == 200, (route, answer.body[:300])
                paths = {entry["path"] for entry in payload(answer)["entries"]}
                assert BOTTOM in paths and sum(path.endswith("/d") for path in paths) >= LEVELS - 1, route
            bottom = await call(port, "GET", f"/api/v1/jobs/{listed}/files/{BOTTOM}", alice)
            assert (bottom.code, bottom.body) == (200, b"deep")

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
