"""Engines on other hosts (``--only hosts``): what crossing a (virtual) network costs.

Two hosts are network namespaces of this machine with their own sshd
(``tests/hosts.py``); moi's Redis and the controller listen on the bridge, and
ipyparallel's SSH launcher starts one engine on each. The same round
(``benchmarks.hosts_round``: trivial jobs one by one, then a ``submit_many``) runs
against the run's local cluster with 2 engines on this host and against the 1 + 1
engines on the two hosts, the two alternating round by round; so does the latency
from a job's end (on its engine) to a watcher on this host (``benchmarks.hosts_latency``):
a websocket client of a moi relay, and the live list of a ``moi server`` in headless
Chromium (skipped, with a line, where Chromium cannot be had). Each side has its own
relay and server, on its own Redis. Needs root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks.api import have_chromium, start_moi_server
from benchmarks.live import start_server
from benchmarks.services import ROOT, Services, bench_env
from benchmarks.stats import Figure
from tests.hosts import Hosts, reason_unavailable


class _Compared:
    """One figure on both sides, and what the two hosts cost against one (a ratio, or a difference)."""

    def __init__(self, label: str, unit: str, ratio: bool) -> None:
        self.here = Figure(f"{label}, engines on this host", unit)
        self.there = Figure(f"{label}, engines on the two hosts", unit)
        self.ratio = ratio
        self.cost = Figure(f"{label}: two hosts {'/' if ratio else 'minus'} one host", "x" if ratio else unit)

    def add(self, here: float, there: float) -> None:
        self.here.add(here)
        self.there.add(there)
        self.cost.add(there / here if self.ratio else there - here)

    def figures(self) -> list[Figure]:
        return [self.here, self.there, self.cost]


def measure(plan: Any, services: Services) -> tuple[str, list[Figure]]:
    title = "Engines on two hosts over SSH"
    reason = reason_unavailable()
    if reason is not None:
        print(f"hosts: skipped: {reason}")
        return title, []
    one = _Compared(f"{plan.jobs} one by one", "jobs/s", ratio=True)
    many = _Compared(f"submit_many of {plan.batch_jobs}", "jobs/s", ratio=True)
    to_client = _Compared("job end -> websocket client p50", "ms", ratio=False)
    to_page = _Compared("job end -> row shows Success in Chromium p50", "ms", ratio=False)
    second_share = Figure("share of the two-host jobs (so far) that ran on the second host", "%")
    here = _Side(services, "bench", {
        **bench_env(services.redis_url),
        "MOI_REDIS_URL": services.redis_url,
        "MOI_CONTEXTS": f"bench={services.url_file}",
        "MOI_DEFAULT_CONTEXT": "bench",
        "MOI_STATE_DIR": str(services.directory / "state"),
    })  # fmt: skip
    with Hosts(2, services.directory / "hosts") as hosts:
        there = _Side(services, "hosts", {**hosts.env(), "PYTHONPATH": str(ROOT)})
        for _ in range(plan.runs):
            to_client.add(here.latency("ws", plan)["p50"], there.latency("ws", plan)["p50"])
            if here.server:
                to_page.add(here.latency("browser", plan)["p50"], there.latency("browser", plan)["p50"])
            local, remote = _round(here.env, "bench", plan), _round(there.env, "hosts", plan)
            if len(remote["hosts"]) != 2:
                raise RuntimeError(f"the jobs ran on {sorted(remote['hosts'])}, not on both hosts")
            second_share.add(100 * remote["hosts"].get("moi-host2", 0) / sum(remote["hosts"].values()))
            one.add(local["one"], remote["one"])
            many.add(local["many"], remote["many"])
    return title, [*one.figures(), *many.figures(), second_share, *to_client.figures(), *to_page.figures()]


class _Side:
    """Engines on this host, or on the two hosts: their environment, a moi relay and a ``moi server`` on it."""

    def __init__(self, services: Services, context: str, env: dict[str, str]) -> None:
        self.context = context
        self.env = env
        self.relay, _ = start_server(services, "moi", env={"MOI_REDIS_URL": env["MOI_REDIS_URL"]})
        self.server = start_moi_server(services, env, f"moi-server-{context}") if have_chromium() else 0

    def latency(self, mode: str, plan: Any) -> dict[str, Any]:
        """``benchmarks.hosts_latency`` in its own process: one job at a time, its end to the watcher."""
        port = self.relay if mode == "ws" else self.server
        argv = [
            sys.executable,
            "-m",
            "benchmarks.hosts_latency",
            mode,
            self.context,
            str(port),
            str(plan.latency_samples),
        ]
        done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"a hosts latency round failed: {done.stderr.strip().splitlines()[-1:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _round(env: dict[str, str], context: str, plan: Any) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.hosts_round", context, str(plan.jobs), str(plan.batch_jobs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"a hosts round failed: {done.stderr.strip().splitlines()[-1:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
