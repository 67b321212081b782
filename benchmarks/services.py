"""Everything a benchmark run needs, started by the run and stopped by it.

One ``Services`` owns a redis-server on a free port, a local ipyparallel
cluster, and (when asked) Celery and RQ workers on that same Redis; closing it
stops every process it started, in reverse order. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from moi.core.config import scheduler_args
from moi.storage import redis_server

log = logging.getLogger("benchmarks.services")

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_ID = "moibench"
WORKER_START_TIMEOUT = 60.0


def bench_env(redis_url: str) -> dict[str, str]:
    """The environment of every process the run starts: engines and workers import ``benchmarks``."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "MOI_BENCH_REDIS_URL": redis_url}


class Services(contextlib.ExitStack):
    """A temporary directory, a Redis, a cluster and peer workers; all gone on close."""

    def __init__(self, engines: int, scheme: str | None = None) -> None:
        super().__init__()
        self.engines = engines
        self.scheme = scheme
        self.directory = Path(self.enter_context(tempfile.TemporaryDirectory(prefix="moi-bench-")))
        self.redis_url = ""
        self.url_file = ""

    def start_redis(self) -> str:
        # No snapshots: a background save forks Redis and competes for the same 2 cores mid-figure.
        proc, self.redis_url = redis_server.start_redis(self.directory / "redis")
        self.callback(_stop, proc)
        os.environ.update(bench_env(self.redis_url))
        return self.redis_url

    def start_cluster(self) -> str:
        """A local cluster; ``scheme`` picks the controller's task scheduler."""
        import ipyparallel

        args = scheduler_args(self.scheme) if self.scheme else []
        cluster = ipyparallel.Cluster(
            n=self.engines,
            profile_dir=str(self.directory / "ipython"),
            cluster_id=CLUSTER_ID,
            controller_args=args,
            log_level=logging.WARNING,
        )
        cluster.start_cluster_sync()
        self.callback(cluster.stop_cluster_sync)
        client = cluster.connect_client_sync()
        try:
            client.wait_for_engines(self.engines, timeout=120)
        finally:
            client.close()
        self.url_file = os.path.join(cluster.profile_dir, "security", f"ipcontroller-{CLUSTER_ID}-client.json")
        return self.url_file

    def start_process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A worker subprocess in its own session, stopped (with its children) on close."""
        log_file = self.enter_context((self.directory / f"{name}.log").open("wb"))
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**bench_env(self.redis_url), **(env or {})},
            cwd=str(ROOT),
            start_new_session=True,  # so that its whole process group can be stopped
        )
        self.callback(_stop_group, proc)
        return proc

    def start_celery(self) -> None:
        self.start_process(
            "celery",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "benchmarks.peers",
                "worker",
                "-c",
                "2",
                "-P",
                "prefork",
                "-Q",
                "bench",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ],
        )

    def start_rq(self, workers: int = 2) -> None:
        for index in range(workers):
            self.start_process(
                f"rq-{index}",
                [
                    sys.executable,
                    "-m",
                    "rq.cli",
                    "worker",
                    "-w",
                    "rq.worker.SimpleWorker",
                    "--url",
                    self.redis_url,
                    "--quiet",
                    "bench",
                ],
            )

    @staticmethod
    def free_port() -> int:
        return redis_server.free_port()

    def redis(self) -> redis.Redis[str]:
        client: redis.Redis[str] = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.callback(client.close)
        return client


def wait_until(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    """``check()`` once it is truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} not ready after {timeout:g}s")


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a worker and the children it forked (Celery's prefork pool)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    with contextlib.suppress(ProcessLookupError):  # whatever of the group is left
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
