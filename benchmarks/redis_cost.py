"""What one finished job costs Redis: commands, bytes sent, bytes stored.

Counted from Redis's own INFO over a round of N jobs, less what the idle
peers (Celery's and RQ's polling workers) send in the same time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.stats import Figure
from benchmarks.throughput import POLICY, moi_submit, moi_submit_many
from moi.compute.context import Context

IDLE_SAMPLE = 1.0  # seconds of idle traffic measured, to subtract


def _counters(client: redis.Redis[str]) -> dict[str, float]:
    stats = client.info("stats")
    commands = client.info("commandstats")
    # moi talks to Redis almost only through Lua scripts: their calls count its round trips.
    return {
        "commands run (those inside Lua scripts included)": float(stats["total_commands_processed"]),
        "Lua script calls (~ round trips)": float(commands.get("cmdstat_evalsha", {}).get("calls", 0)),
        "bytes sent to Redis": float(stats["total_net_input_bytes"]),
        "bytes sent by Redis (replies, pub/sub)": float(stats["total_net_output_bytes"]),
    }


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


def _per_job(
    client: redis.Redis[str], run: Callable[[int], float], n: int, idle_rate: dict[str, float]
) -> dict[str, float]:
    before = _counters(client)
    memory = float(client.info("memory")["used_memory"])
    seconds = run(n)
    used = _diff(_counters(client), before)
    per_job = {name: (value - idle_rate[name] * seconds) / n for name, value in used.items()}
    per_job["memory growth (used_memory)"] = (float(client.info("memory")["used_memory"]) - memory) / n
    return per_job


def _stored_bytes(client: redis.Redis[str], pattern_ids: list[str]) -> float:
    sizes = [client.memory_usage(job_id) or 0 for job_id in pattern_ids[:200]]
    return sum(sizes) / max(1, len(sizes))


def measure(plan: Any, ctx: Context, redis_url: str) -> tuple[str, list[Figure]]:
    client: redis.Redis[str] = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        before = _counters(client)
        time.sleep(IDLE_SAMPLE)
        idle_rate = {name: value / IDLE_SAMPLE for name, value in _diff(_counters(client), before).items()}
        figures: dict[str, Figure] = {}
        runs = (
            ("submit", moi_submit(ctx)),
            ("submit, time_limit=15m retries=3", moi_submit(ctx, **POLICY)),  # what carrying them costs Redis
            ("submit_many", moi_submit_many(ctx)),
        )
        for label, run in runs:
            for _ in range(plan.runs):
                for name, value in _per_job(client, run, plan.jobs, idle_rate).items():
                    figures.setdefault(f"{label}: {name}", Figure(f"{label}: {name}", "per job")).add(value)
        figures["info object stored (MEMORY USAGE)"] = Figure("info object stored (MEMORY USAGE)", "bytes")
        figures["info object stored (MEMORY USAGE)"].add(_stored_bytes(client, _latest_job_ids(client)))
        return "Redis: cost of one finished trivial job", list(figures.values())
    finally:
        client.close()


def _latest_job_ids(client: redis.Redis[str]) -> list[str]:
    from benchmarks.throughput import GROUP

    group_id = client.hget("user-id-map", GROUP)
    return list(client.srandmember(f"{group_id}:jobs", 200) or []) if group_id else []
