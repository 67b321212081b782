"""Services: what a service job costs over a plain submit, and what a retention pass costs.

Overhead: 1,000 single-step jobs, submitted one by one and waited for, as a plain
``submit`` of a shell command in a job directory, as a Python service whose ``run``
returns that command, and as a one-step YAML service. Sweeper: 100,000 finished
service jobs stored with their due entries (none due yet), then passes timed and
their Redis round trips counted; then a pass that archives 1,000 due jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from benchmarks.services import Services
from benchmarks.stats import Figure

USER = "bench-services"
JOBS = 1_000
KEPT = 100_000
DUE = 1_000
TIMEOUT = 600.0
ONE_STEP = """
services:
  - name: bench-yaml
    steps:
      - {name: only, run: "true"}
"""


def measure(plan: Any, services: Services) -> tuple[str, list[Figure]]:
    from benchmarks.service_defs import BenchService
    from moi import services as moi_services

    moi_services.register(BenchService)
    moi_services.load_into(_store(), ONE_STEP, "bench.yaml")
    plain, python, yaml = (
        Figure(f"plain submit of a shell command in a job directory, {JOBS:,} jobs", "jobs/s"),
        Figure(f"Python service, run() returns that command, {JOBS:,} jobs", "jobs/s"),
        Figure(f"YAML service, one step, {JOBS:,} jobs", "jobs/s"),
    )
    idle, idle_trips, busy, busy_trips = (
        Figure(f"sweeper pass, {KEPT:,} finished service jobs, none due", "ms"),
        Figure("  its Redis round trips", "trips"),
        Figure(f"sweeper pass archiving {DUE:,} due jobs (of {KEPT:,})", "ms"),
        Figure("  its Redis round trips", "trips"),
    )
    for _ in range(plan.runs):
        plain.add(_rate(_plain))
        python.add(_rate(lambda: moi_services.submit("bench-python", USER, {})))
        yaml.add(_rate(lambda: moi_services.submit("bench-yaml", USER, {})))
    _store_finished(KEPT)
    for _ in range(plan.runs):
        seconds, trips = _sweep()
        idle.add(seconds * 1000)
        idle_trips.add(trips)
        _make_due(DUE)
        seconds, trips = _sweep()
        busy.add(seconds * 1000)
        busy_trips.add(trips)
    return "Services", [plain, python, yaml, idle, idle_trips, busy, busy_trips]


def _store() -> Any:
    from moi.jobs import connections

    return connections.store()


def _plain() -> Any:
    from moi import job

    return job.submit(None, USER, "plain", None, job.system_call, "true", workdir=True)


def _rate(submit_one: Any) -> float:
    from moi.queue.job_handle import JobHandle

    start = time.perf_counter()
    handles: list[JobHandle] = [submit_one()[2] for _ in range(JOBS)]
    for handle in handles:
        if not handle.wait(TIMEOUT):
            raise RuntimeError(f"job {handle.job_id} did not finish")
    return JOBS / (time.perf_counter() - start)


def _store_finished(count: int) -> None:
    """``count`` Success service jobs under one user, each due for archiving in a year."""
    from moi.core.info import dumps, new_id, new_info, now

    store = _store()
    group = store.ensure_group(USER + "-kept")
    due = time.time() + 365 * 86400
    pipe = store.redis.pipeline(transaction=False)
    for index in range(count):
        info = new_info(new_id(), "kept", "job", "", parent=group, context="default")
        info.update(status="Success", service="bench-python", params={}, date_end=now())
        info["retention"] = {"archive_after": 86400.0, "expire_after": 86400.0, "keep_expired": 86400, "hooks": []}
        pipe.set(store.keys.info(info["id"]), dumps(info), ex=3 * 86400)
        pipe.zadd(store.keys.due("archive"), {info["id"]: due})
        if index % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def _make_due(count: int) -> None:
    store = _store()
    ids = store.redis.zrange(store.keys.due("archive"), 0, count - 1)
    store.redis.zadd(store.keys.due("archive"), {job_id: 0 for job_id in ids}, xx=True)


def _sweep() -> tuple[float, int]:
    from moi.services import sweeper

    store = _store()
    with _counting() as trips:
        start = time.perf_counter()
        sweeper.sweep(store, batch=DUE)
        seconds = time.perf_counter() - start
    return seconds, trips[0]


@contextmanager
def _counting() -> Iterator[list[int]]:
    """Redis round trips made meanwhile: single commands and pipeline executions (each one trip)."""
    trips = [0]
    command, execute = redis.Redis.execute_command, redis.client.Pipeline.execute

    def counted_command(self: Any, *args: Any, **options: Any) -> Any:
        trips[0] += 1
        return command(self, *args, **options)

    def counted_execute(self: Any, *args: Any, **options: Any) -> Any:
        trips[0] += 1
        return execute(self, *args, **options)

    redis.Redis.execute_command = counted_command  # type: ignore[method-assign]
    redis.client.Pipeline.execute = counted_execute  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        redis.Redis.execute_command = command  # type: ignore[method-assign]
        redis.client.Pipeline.execute = execute  # type: ignore[method-assign]
