"""Engines from a Slurm cluster: a one-node Slurm (slurmctld + slurmd) made for the run.

The cluster is started as the README's Slurm example says, with ``ipcluster`` and
ipyparallel's Slurm launchers (the controller and the engines are each a Slurm job);
moi's context names it by profile and cluster id. A ``moi server`` dispatches and
watches, and serves the page a user watches. Where Slurm cannot run (not root, no
package), the module is skipped with one line; in CI (``CI=true``, as root) it runs.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from moi.storage.redis_server import free_port, start_redis
from tests.browser import Server, log_in, row
from tests.conftest import ROOT, until
from tests.processes import stop
from tests.slurm import Slurm

pytestmark = pytest.mark.slow  # a Slurm controller and daemon started for the module

WAIT = 180.0  # seconds for what Slurm and the cluster do; nothing here is timed
ENGINES_JOB = "ipengine-c1"  # the Slurm job name ipyparallel's engine launcher gives the engines of cluster c1

# What the README's Slurm example puts in the profile's ipcluster_config.py (the queue, a time limit).
IPCLUSTER_CONFIG = """
c.SlurmLauncher.queue = "debug"
c.SlurmLauncher.timelimit = "2:00:00"
"""


@pytest.fixture(scope="module")
def slurm_env(slurm: Slurm) -> Iterator[dict[str, str]]:
    """moi configured as the README says: ``MOI_CONTEXTS=big=slurm:c1``, its cluster started by ``ipcluster``."""
    directory = slurm.directory
    redis_proc, redis_url = start_redis(directory / "redis", password=secrets.token_urlsafe(24))
    env = {
        **slurm.env(),
        "IPYTHONDIR": str(directory / "ipython"),  # the profile `slurm` lives there
        "PYTHONPATH": str(ROOT),  # the engines (sbatch --export=ALL) import the tests' job functions
        "MOI_REDIS_URL": redis_url,
        "MOI_CONTEXTS": "big=slurm:c1",
        "MOI_DEFAULT_CONTEXT": "big",
        "MOI_STATE_DIR": str(directory / "state"),
    }
    try:  # whatever fails from here, the Redis goes (and the Slurm jobs go with the Slurm fixture)
        profile = ["ipython", "profile", "create", "slurm", "--parallel"]
        subprocess.run(profile, env=env, capture_output=True, check=True)
        with open(Path(env["IPYTHONDIR"]) / "profile_slurm" / "ipcluster_config.py", "a") as config:
            config.write(IPCLUSTER_CONFIG)
        # The README's line: ipcluster start --profile=slurm --cluster-id=c1 -n 2 --engines=slurm --controller=slurm
        ipcluster(
            env, "start", "--profile=slurm", "--cluster-id=c1", "-n", "2", "--engines=slurm", "--controller=slurm"
        )
        yield env
    finally:
        ipcluster_stop = ["ipcluster", "stop", "--profile=slurm", "--cluster-id=c1"]
        subprocess.run(ipcluster_stop, cwd=directory, env=env, capture_output=True)
        stop(redis_proc)


@pytest.fixture(scope="module")
def server(slurm_env: dict[str, str]) -> Iterator[Server]:
    """``moi server``: the Slurm context's dispatcher and watchdog, and the page its users watch."""
    started = Server(free_port(), env=slurm_env)
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def slurm_redis(slurm_env: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(slurm_env["MOI_REDIS_URL"], decode_responses=True)
    yield client
    client.close()


def ipcluster(env: dict[str, str], *argv: str) -> None:
    # In the run's directory: the launchers write their batch scripts into the working directory.
    argv = ("ipcluster", *argv, "--daemonize")
    done = subprocess.run(argv, cwd=env["IPYTHONDIR"], env=env, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr


def moi(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moi", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT
    )


def statuses(client: redis.Redis, ids: list[str]) -> list[str]:
    return [json.loads(text)["status"] for text in client.mget(ids)]


def test_a_job_runs_on_engines_that_slurm_started_and_moi_status_shows_the_context(
    slurm_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    status = moi(slurm_env, "status")  # no dispatcher yet: the controller is probed at the profile's connection file
    assert status.returncode == 0, status.stderr
    assert "configured context: big -> slurm:c1" in status.stdout
    assert "context big: online (no dispatcher running), 0 queued" in status.stdout, status.stdout

    done = moi(slurm_env, "submit", "--context", "big", "--cmd", "return 1", "--block")  # the README's line
    assert done.returncode == 0, done.stderr
    assert "Success" in done.stdout, done.stdout

    request.getfixturevalue("server")  # now a moi server dispatches, and notes what it sees
    until(lambda: "context big: online, 2 engines" in moi(slurm_env, "status").stdout, "moi status: 2 engines", WAIT)


def test_scancel_fails_the_running_jobs_and_the_queued_wait_for_the_next_engines(
    slurm: Slurm, slurm_env: dict[str, str], server: Server, slurm_redis: redis.Redis, browser: Any
) -> None:
    """It cancels the engines' Slurm job and starts another (two engines in one Slurm job, as the next test expects)."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    try:
        log_in(page, server, "hana")  # the jobs below are hana's: her live list shows them as they change
        made = subprocess.run(
            [sys.executable, "-m", "tests.hosts_jobs", "slow", "5"],
            cwd=ROOT, env=slurm_env, capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        ids = json.loads(made.stdout)
        slow, queued = ids[:2], ids[2:]  # two jobs of 20 s, one per engine, then three waiting for an engine
        for job_id in slow:
            expect(row(page, job_id).locator(".moi-status")).to_have_text("Running", timeout=WAIT * 1000)
        [engines_job] = slurm.job_ids(ENGINES_JOB)

        slurm.run("scancel", engines_job)  # the engines' Slurm job ends: its engines are killed

        for job_id in slow:
            expect(row(page, job_id).locator(".moi-status")).to_have_text("Failed", timeout=WAIT * 1000)
        results = [json.loads(text)["result"] for text in slurm_redis.mget(slow)]
        assert all("Engine lost" in str(result) for result in results), results
        until(lambda: not slurm.job_ids(ENGINES_JOB), "the engines' Slurm job gone", WAIT)
        assert statuses(slurm_redis, queued) == ["Queued"] * 3  # no engine: they wait, nothing is lost
        assert slurm_redis.scard("moi:running") == 0

        ipcluster(slurm_env, "engines", "--profile=slurm", "--cluster-id=c1", "-n", "2", "--engines=slurm")

        for job_id in queued:  # the next engines run them
            expect(row(page, job_id).locator(".moi-status")).to_have_text("Success", timeout=WAIT * 1000)
    finally:
        page.context.close()


def hold(env: dict[str, str], marks: Path) -> str:
    """A job of hana's on the Slurm context that runs until ``release-1`` appears in ``marks`` (it notes its
    engine's pid in ``started-1``): submitted by a process of the context's environment."""
    marks.mkdir()
    code = (
        "import sys; from moi.job import submit; from tests.retry_jobs import attempt_then_wait; "
        "print(submit(None, 'hana', 'hold', None, attempt_then_wait, sys.argv[1])[0])"
    )
    made = subprocess.run(
        [sys.executable, "-c", code, str(marks)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_an_admin_adds_an_engine_as_a_slurm_job_and_removes_idle_ones_while_a_job_runs(
    slurm: Slurm, slurm_env: dict[str, str], server: Server, slurm_redis: redis.Redis, tmp_path: Path
) -> None:
    """After the scancel test: the context has the two engines of one Slurm job (``ipcluster engines -n 2``)."""
    made = moi(slurm_env, "token", "create", "--user", "ops", "--admin")
    assert made.returncode == 0, made.stderr
    api = httpx.Client(
        base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {made.stdout.strip()}"}, timeout=WAIT
    )

    def engines() -> int | None:
        seen = api.get("/contexts").json()["contexts"]["big"]
        assert seen["scalable"]  # ipcluster's cluster file is beside the connection file
        return seen["engines"]

    until(lambda: engines() == 2, "the two engines of the Slurm job counted", WAIT)
    [first_job] = slurm.job_ids(ENGINES_JOB)

    added = api.post("/contexts/big/engines/add")  # sbatch, by the cluster's own Slurm launcher
    assert added.json() == {"context": "big", "engines_wanted": 3}, added.text
    [added_job] = set(slurm.job_ids(ENGINES_JOB)) - {first_job}  # one Slurm job more, of one engine
    until(lambda: engines() == 3, "the engine of the new Slurm job counted", WAIT)
    assert not (ROOT / "slurm_engine.sbatch").exists()  # its batch script is in the profile, not the server's cwd
    assert (Path(slurm_env["IPYTHONDIR"]) / "profile_slurm" / "slurm_engine.sbatch").is_file()

    marks = tmp_path / "hold"
    running = hold(slurm_env, marks)  # a job runs, on one of the three engines
    until(lambda: (marks / "started-1").exists(), "the job running", WAIT)

    for wanted in (2, 1):  # the two idle engines retired and shut down; the busy one kept
        removed = api.post("/contexts/big/engines/remove")
        assert removed.json() == {"context": "big", "engines_wanted": wanted}, removed.text
    until(lambda: engines() == 1, "one engine left", WAIT)
    assert statuses(slurm_redis, [running]) == ["Running"]  # a removal cuts no job short
    # The Slurm job all of whose engines were shut down ends (the added one, or the first if the job runs on
    # the added engine); a Slurm job with an engine left runs on.
    until(lambda: len(slurm.job_ids(ENGINES_JOB)) == 1, "the Slurm job of the removed engines ended", WAIT)
    assert set(slurm.job_ids(ENGINES_JOB)) < {first_job, added_job}

    (marks / "release-1").touch()
    until(lambda: statuses(slurm_redis, [running]) == ["Success"], "the job done", WAIT)
    api.close()
