"""Engines on other hosts (``--only hosts``): what crossing a (virtual) network costs.

Two hosts are network namespaces of this machine with their own sshd
(``tests/hosts.py``); moi's Redis and the controller listen on the bridge, and
ipyparallel's SSH launcher starts one engine on each. The same round
(``benchmarks.hosts_round``: trivial jobs one by one, then a ``submit_many``) runs
against the run's local cluster with 2 engines on this host and against the 1 + 1
engines on the two hosts, the two alternating round by round; so does the latency
from a job's end (on its engine) to the frame of a moi relay on this host
(``benchmarks.hosts_latency``), a relay per Redis. Needs root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from benchmarks.live import start_server
from benchmarks.services import ROOT, Services, bench_env
from benchmarks.stats import Figure
from tests.hosts import Hosts, reason_unavailable


def measure(plan: Any, services: Services) -> tuple[str, list[Figure]]:
    title = "Engines on two hosts over SSH"
    reason = reason_unavailable()
    if reason is not None:
        print(f"hosts: skipped: {reason}")
        return title, []
    local_one = Figure(f"{plan.jobs} one by one, 2 engines on this host", "jobs/s")
    remote_one = Figure(f"{plan.jobs} one by one, 1 + 1 engines on two hosts", "jobs/s")
    one_cost = Figure("two hosts / one host, one by one", "x")
    local_many = Figure(f"submit_many of {plan.batch_jobs}, 2 engines on this host", "jobs/s")
    remote_many = Figure(f"submit_many of {plan.batch_jobs}, 1 + 1 engines on two hosts", "jobs/s")
    many_cost = Figure("two hosts / one host, submit_many", "x")
    second_share = Figure("share of the two-host jobs (so far) that ran on the second host", "%")
    local_live = Figure("job end -> websocket client p50, engines on this host", "ms")
    remote_live = Figure("job end -> websocket client p50, engines on the two hosts", "ms")
    live_cost = Figure("two hosts minus one host, job end -> client p50", "ms")
    local_env = {
        **bench_env(services.redis_url),
        "MOI_REDIS_URL": services.redis_url,
        "MOI_CONTEXTS": f"bench={services.url_file}",
        "MOI_STATE_DIR": str(services.directory / "state"),
    }
    local_relay, _ = start_server(services, "moi")
    with Hosts(2, services.directory / "hosts") as hosts:
        remote_env = {**hosts.env(), "PYTHONPATH": str(ROOT)}
        remote_relay, _ = start_server(services, "moi", env={"MOI_REDIS_URL": hosts.redis_url})
        for _ in range(plan.runs):
            here_live = _latency(local_env, "bench", local_relay, plan)
            there_live = _latency(remote_env, "hosts", remote_relay, plan)
            local_live.add(here_live["p50"])
            remote_live.add(there_live["p50"])
            live_cost.add(there_live["p50"] - here_live["p50"])
            here = _round(local_env, "bench", plan)
            there = _round(remote_env, "hosts", plan)
            if len(there["hosts"]) != 2:
                raise RuntimeError(f"the jobs ran on {sorted(there['hosts'])}, not on both hosts")
            second_share.add(100 * there["hosts"].get("moi-host2", 0) / sum(there["hosts"].values()))
            local_one.add(here["one"])
            remote_one.add(there["one"])
            local_many.add(here["many"])
            remote_many.add(there["many"])
            one_cost.add(there["one"] / here["one"])
            many_cost.add(there["many"] / here["many"])
    throughput = [local_one, remote_one, one_cost, local_many, remote_many, many_cost, second_share]
    return title, [*throughput, local_live, remote_live, live_cost]


def _latency(env: dict[str, str], context: str, relay_port: int, plan: Any) -> dict[str, Any]:
    """``benchmarks.hosts_latency`` in its own process: one job at a time, its end to the relay's frame."""
    argv = [sys.executable, "-m", "benchmarks.hosts_latency", context, str(relay_port), str(plan.latency_samples)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
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
