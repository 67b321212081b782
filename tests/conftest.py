"""One real Redis server and one real ipyparallel cluster for the whole session.

Both run on free ports on 127.0.0.1 in a temporary directory and are stopped
at the end; the machine's own Redis is never touched. The environment points
moi (and every CLI subprocess) at them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import moi.jobs.connections
from moi.cli import wait_for
from moi.core.info import Info
from moi.storage import redis_server

ROOT = Path(__file__).resolve().parent.parent
ENGINES = 2
# The session's Redis asks for a password, as moi's own does: every moi process must pass it on.
REDIS_PASSWORD = "moi-test-S3cret"
CODE_UIDS = (200000, 265535)  # [security] code_uids: no account on a test machine has these
# Seconds an engine's heartbeat lives (moi.compute.heartbeats), set where every engine of the session starts: the
# watchdog fails a killed engine's job within about this + GRACE + 2 * INTERVAL (9 s, not 15 s with the default 10),
# and a live engine's beats (one a second) must be held up over 4 s + GRACE = 7 s (not 13 s) to be taken for a death.
HEARTBEAT_TTL = "4"
# The system's Python: sys.executable may sit where another uid cannot go (here, under /root).
CODE_PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("moi-session")


@pytest.fixture(scope="session")
def redis_url(session_dir: Path) -> Iterator[str]:
    proc, url = redis_server.start_redis(session_dir / "redis", password=REDIS_PASSWORD)
    yield url
    proc.terminate()
    proc.wait(10)


# What the tests' own clusters' controllers get: a heartbeat every second, not ipyparallel's 3 s. The controller
# registers an engine only once it has heard the engine's first beat, so a cluster starts ~3 s sooner; 30 missed
# beats, not 10, before it takes an engine for dead: 30 s, as with ipyparallel's defaults, on a loaded machine too.
QUICK_CONTROLLER = ["--HeartMonitor.period=1000", "--HeartMonitor.max_heartmonitor_misses=30"]


def quick_stop() -> Any:
    """An ipyparallel cluster's config whose stop SIGKILLs an engine 1 s after its SIGTERM, not 5 s: an engine busy
    with a job (a test's long job, still running) ignores SIGTERM, and killed it must be either way."""
    from traitlets.config import Config

    config = Config()
    config.LocalEngineLauncher.stop_seconds_until_kill = 1
    return config


@pytest.fixture(scope="session")
def cluster_file(session_dir: Path) -> Iterator[str]:
    import ipyparallel

    # Engines import job functions from tests/ by reference.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["MOI_HEARTBEAT_TTL"] = HEARTBEAT_TTL  # in the engines' environment (and every process after)
    cluster = ipyparallel.Cluster(
        n=ENGINES,
        profile_dir=str(session_dir / "ipython"),
        cluster_id="moitest",
        config=quick_stop(),
        controller_args=QUICK_CONTROLLER,
    )
    cluster.start_cluster_sync()
    client = cluster.connect_client_sync()
    client.wait_for_engines(ENGINES, timeout=120)
    client.close()
    yield os.path.join(cluster.profile_dir, "security", "ipcontroller-moitest-client.json")
    cluster.stop_cluster_sync()


def code_network() -> str:
    """none (the default: code gets a network namespace of its own) where this machine allows it; else host."""
    try:
        isolated = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        isolated = False
    return "none" if isolated else "host"


@pytest.fixture(scope="session", autouse=True)
def moi_environment(redis_url: str, cluster_file: str, session_dir: Path) -> Iterator[None]:
    """Point moi, and every moi subprocess, at the session's Redis and cluster."""
    saved = dict(os.environ)
    os.environ.update(
        MOI_REDIS_URL=redis_url,
        MOI_CONTEXTS=f"default={cluster_file}",
        MOI_STATE_DIR=str(session_dir / "state"),
        # Code over the web runs as uids of this range (the tests run as root), in an interpreter any uid may run.
        MOI_CODE_UIDS=f"{CODE_UIDS[0]}-{CODE_UIDS[1]}",
        MOI_CODE_PYTHON=CODE_PYTHON,
        MOI_CODE_NETWORK=code_network(),
    )
    os.environ.pop("MOI_CONFIG_FP", None)
    moi.jobs.connections.reset()
    yield
    moi.jobs.connections.reset()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A one-node Slurm cluster for the session (tests.slurm), shared by the engine and scheduler-context tests."""
    from tests.slurm import Slurm, reason_unavailable

    require(reason_unavailable(), "Slurm tests")
    with Slurm(tmp_path_factory.mktemp("slurm")) as made:
        yield made


@pytest.fixture(scope="session")
def gridengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A one-host Grid Engine cell for the session (tests.gridengine), shared by its own tests and moi's adapter's."""
    from tests.gridengine import GridEngine, reason_unavailable

    require(reason_unavailable(), "Grid Engine tests")
    with GridEngine(tmp_path_factory.mktemp("gridengine")) as cell:
        yield cell


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A raw client on the session's Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def store(r: redis.Redis) -> Any:
    return moi.jobs.connections.store()


def run_moi(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the moi command as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "moi", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


# What dispatchers keep for themselves while they run: their leases and their notes of clusters seen online.
DISPATCHER_KEYS = ("moi:dispatcher:", "moi:online:", "moi:workers:")


def kept(r: redis.Redis) -> set[str]:
    """Every key but the dispatchers' own bookkeeping (a dispatcher of an earlier test may still run)."""
    return {key for key in r.keys("*") if not key.startswith(DISPATCHER_KEYS)}


def nothing_stored(r: redis.Redis) -> bool:
    """No key in Redis, but the dispatchers' own bookkeeping: nothing of a job was written."""
    return not [key for key in r.keys("*") if not key.startswith(DISPATCHER_KEYS)]


def require(reason: str | None, what: str) -> None:
    """Go on where ``reason`` is None; else skip, printing the one line that says why (in CI, fail)."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    print(f"\n{what} skipped: {reason}")
    pytest.skip(reason)


def until(check: Any, what: str, timeout: float = 90) -> Any:
    """``check()``'s first true value, asked for up to ``timeout`` seconds; else AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g}s: {what}")


def finished(job_id: str, timeout: float = 60) -> Info:
    return wait_for(job_id, timeout=timeout, poll=0.2)


def next_message(pubsub: Any, timeout: float = 10) -> Any:
    """The next published message (redis-py returns None for skipped subscribe replies)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            return message
    return None


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int, list[Any]]]:
    """A redis-server of the test's own, on a fixed port it can be restarted on.

    Yields (url, port, servers); a test that restarts it appends the new process.
    """
    port = redis_server.free_port()
    proc, url = redis_server.start_redis(tmp_path / "redis", port)
    monkeypatch.setenv("MOI_REDIS_URL", url)
    moi.jobs.connections.reset()
    servers: list[Any] = [proc]
    yield url, port, servers
    for proc in servers:
        proc.terminate()
        proc.wait(10)
    moi.jobs.connections.reset()


@pytest.fixture
def spare(store, monkeypatch, tmp_path):
    """A context of the test's own, named ``spare``, with no cluster: ``spare(name)`` starts an engine of the
    test's own for it (``tests.retry_jobs.start_engine``), which the test may kill or stop; all end with the test."""
    from tests.retry_jobs import start_engine

    monkeypatch.setenv("MOI_CONTEXTS", f"{os.environ['MOI_CONTEXTS']},spare={tmp_path}/no-cluster.json")
    moi.jobs.connections.reset()
    engines: list = []

    def start(name: str):
        engine = start_engine("spare", store.url, store.ttl, tmp_path / f"{name}.log")
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        if engine.poll() is None:
            engine.kill()
        engine.wait(30)
    moi.jobs.connections.reset()


# The browser tests' fixtures (imported last: tests.browser uses this module).
from tests.browser import browser, page, server  # noqa: E402, F401
from tests.login_node import login_node  # noqa: E402, F401  (the login node of scheduler contexts over SSH)
