"""Throughput: N trivial jobs, from the first submission to the last job done.

Each system is a callable ``run(n) -> seconds``. For moi the clock stops when
every job's info object reads ``Success`` in Redis (the engine writes it before
the task returns; the final read that checks all N is inside the timing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from benchmarks.stats import Figure
from benchmarks.tasks import trivial
from moi.compute.context import Context
from moi.compute.worker import LINGER
from moi.core.info import Status
from moi.job import submit, submit_many
from moi.jobs import connections

log = logging.getLogger("benchmarks.throughput")

GROUP = "bench-throughput"
TIMEOUT = 300.0

Runner = Callable[[int], float]


def _wait_handles(ctx: Context, handles: list[Any]) -> None:
    if not ctx.client.wait(handles, timeout=TIMEOUT):
        raise TimeoutError(f"{len(handles)} ipyparallel tasks not done after {TIMEOUT:g}s")
    for handle in handles:
        handle.get(0)  # raises if a task failed


def _check_success(job_ids: list[str]) -> None:
    infos = connections.store().get_many(job_ids)
    done = sum(1 for info in infos if info["status"] == Status.SUCCESS)
    if done != len(job_ids):
        raise RuntimeError(f"only {done} of {len(job_ids)} jobs read Success")


def _wait_success(job_ids: list[str]) -> None:
    """Until every job reads Success in Redis: one MGET per look, as a dashboard would read them."""
    store = connections.store()
    deadline = time.monotonic() + TIMEOUT
    pending = job_ids
    while pending:
        infos = store.get_many(pending)
        failed = [info["id"] for info in infos if info["status"] in (Status.FAILED, Status.CANCELLED)]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs did not succeed, {failed[0]} first")
        pending = [info["id"] for info in infos if info["status"] != Status.SUCCESS]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} moi jobs not done after {TIMEOUT:g}s")
        if pending:
            time.sleep(0.002)


# A time limit and retries that never fire: what carrying them costs (issue 30: within 5% of plain jobs).
POLICY = {"time_limit": "15m", "retries": 3}


def moi_submit(ctx: Context, **policy: Any) -> Runner:
    def run(n: int) -> float:
        start = time.perf_counter()
        job_ids = [submit(ctx, GROUP, "trivial", None, trivial, **policy)[0] for _ in range(n)]
        _wait_success(job_ids)
        seconds = time.perf_counter() - start
        time.sleep(LINGER + 0.5)  # untimed: moi's engines stop waiting for work, free for the next system
        return seconds

    return run


def moi_submit_many(ctx: Context) -> Runner:
    def run(n: int) -> float:
        start = time.perf_counter()
        job_ids, _, batch = submit_many(ctx, GROUP, "trivial", None, trivial, [()] * n)
        batch.wait(TIMEOUT)
        _check_success(job_ids)
        return time.perf_counter() - start

    return run


def raw_ipyparallel(ctx: Context) -> Runner:
    view = ctx.view

    def run(n: int) -> float:
        start = time.perf_counter()
        handles = [view.apply_async(trivial) for _ in range(n)]
        _wait_handles(ctx, handles)
        return time.perf_counter() - start

    return run


def celery_one_by_one() -> Runner:
    from benchmarks.peers import trivial as celery_trivial

    def run(n: int) -> float:
        start = time.perf_counter()
        results = [celery_trivial.delay() for _ in range(n)]
        # Waiting on each result was the fastest way tried (ResultSet.join_native and join were slower).
        for result in results:
            result.get(timeout=TIMEOUT)
        return time.perf_counter() - start

    return run


def rq_runner(redis_url: str, batched: bool) -> Runner:
    import redis
    from rq import Queue

    connection = redis.Redis.from_url(redis_url)
    queue = Queue("bench", connection=connection)
    registry = queue.finished_job_registry

    def run(n: int) -> float:
        before = registry.get_job_count(cleanup=False)
        start = time.perf_counter()
        if batched:
            queue.enqueue_many([Queue.prepare_data("benchmarks.tasks.trivial") for _ in range(n)])
        else:
            for _ in range(n):
                queue.enqueue("benchmarks.tasks.trivial")
        deadline = time.monotonic() + TIMEOUT
        while registry.get_job_count(cleanup=False) - before < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"RQ did not finish {n} jobs in {TIMEOUT:g}s")
            time.sleep(0.002)
        return time.perf_counter() - start

    return run


def warm_up(runner: Runner, n: int = 20) -> None:
    """One small untimed round: imports, connections and caches on every side."""
    runner(n)


def measure(plan: Any, ctx: Context, redis_url: str) -> tuple[str, list[Figure]]:
    """Every system, round after round, in a rotating order: the same machine for each."""
    systems: dict[str, tuple[Runner, int]] = {
        "raw ipyparallel apply_async": (raw_ipyparallel(ctx), plan.jobs),
        "moi submit, one by one": (moi_submit(ctx), plan.jobs),
        "moi submit, one by one, time_limit=15m retries=3": (moi_submit(ctx, **POLICY), plan.jobs),
        "moi submit_many": (moi_submit_many(ctx), plan.batch_jobs),
    }
    if plan.peers:
        systems["Celery delay, prefork -c 2"] = (celery_one_by_one(), plan.jobs)
        systems["RQ enqueue, 2 SimpleWorkers"] = (rq_runner(redis_url, batched=False), plan.jobs)
        systems["RQ enqueue_many, 2 SimpleWorkers"] = (rq_runner(redis_url, batched=True), plan.jobs)
    figures = {name: Figure(name, "jobs/s") for name in systems}
    for runner, _ in systems.values():
        warm_up(runner)
    submit_ratio = Figure("moi submit / raw apply_async", "x")
    policy_ratio = Figure("moi submit with time_limit and retries / plain (target >= 0.95)", "x")
    peer_ratio = Figure("moi submit / best of Celery, RQ one by one (target >= 1.0, aim 1.5)", "x")
    many_ratio = Figure("moi submit_many / best of Celery, RQ one by one (target >= 5)", "x")
    names = list(systems)
    for round_index in range(plan.runs):
        rates: dict[str, float] = {}
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            runner, n = systems[name]
            rates[name] = n / runner(n)
            figures[name].add(rates[name])
            log.info("round %d: %s %.0f jobs/s", round_index, name, rates[name])
        submit_ratio.add(rates["moi submit, one by one"] / rates["raw ipyparallel apply_async"])
        policy_ratio.add(rates["moi submit, one by one, time_limit=15m retries=3"] / rates["moi submit, one by one"])
        peers = [rate for name, rate in rates.items() if name.startswith(("Celery delay", "RQ enqueue,"))]
        if peers:
            peer_ratio.add(rates["moi submit, one by one"] / max(peers))
            many_ratio.add(rates["moi submit_many"] / max(peers))
    ratios = [submit_ratio, policy_ratio, peer_ratio, many_ratio] if plan.peers else [submit_ratio, policy_ratio]
    return "Throughput: trivial jobs, submit to every job done", [*figures.values(), *ratios]
