"""Where ``submit``'s overhead comes from: ``python -m benchmarks.overhead [--jobs N] [--rounds R]``.

``submit`` costs three Redis round trips per job on top of ipyparallel's own
work: the submitter stores and announces the job, the engine marks it Running
(the compare-and-set that keeps a cancelled job from starting), and the engine
records the final state before the task returns (so whoever holds the handle
reads Success in Redis). This adds them one at a time, on one cluster:

1. raw ``apply_async`` of the trivial function;
2. the submitter's round trip (store and announce), then raw ``apply_async``;
   2b. and the task in moi's envelope (the job's spec, the function called by name);
3. all of those, and the engine's Running write before the call;
4. moi ``submit`` (all three round trips, and the heartbeat bookkeeping).

Every round runs each step once, in a shuffled order; each step is shown as
the median over rounds of its throughput relative to step 1 in the same round
(the machine drifts between rounds; within one it is shared alike).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import throughput
from benchmarks.services import Services
from benchmarks.tasks import envelope_only, started_only, trivial

log = logging.getLogger("benchmarks.overhead")

Runner = Callable[[int], float]


def _stored_job(ctx: Any, store: Any) -> Any:
    """What ``submit`` does before it hands the job to the cluster: store and announce it (one round trip)."""
    from moi.info import new_id, new_info
    from moi.job import JobSpec

    job_id = new_id()
    info = new_info(job_id, "overhead", "job", store.keys.channel(job_id), context=ctx.name)
    store.add_queued("bench-overhead", [info], ctx.queued_entry())
    return JobSpec(info["id"], store.url, store.keys.prefix, store.ttl, info)


def steps(ctx: Any, store: Any) -> dict[str, Runner]:
    from moi.context import ByName

    view = ctx.view

    def submitter_write(n: int) -> float:
        start = time.perf_counter()
        handles = []
        for _ in range(n):
            _stored_job(ctx, store)
            handles.append(view.apply_async(trivial))
        throughput._wait_handles(ctx, handles)
        return time.perf_counter() - start

    def envelope(n: int) -> float:
        start = time.perf_counter()
        handles = [view.apply_async(ByName(envelope_only), _stored_job(ctx, store), trivial) for _ in range(n)]
        throughput._wait_handles(ctx, handles)
        return time.perf_counter() - start

    def running_write(n: int) -> float:
        start = time.perf_counter()
        handles = [view.apply_async(ByName(started_only), _stored_job(ctx, store), trivial) for _ in range(n)]
        throughput._wait_handles(ctx, handles)
        return time.perf_counter() - start

    return {
        "1. raw apply_async": throughput.raw_ipyparallel(ctx),
        "2. + submitter stores and announces (1 round trip)": submitter_write,
        "2b. + moi's task envelope (the job's spec, run_job by name)": envelope,
        "3. + engine writes Running before the call (2 round trips)": running_write,
        "4. moi submit: + engine writes the final state (3 round trips)": throughput.moi_submit(ctx),
    }


def measure(runners: dict[str, Runner], jobs: int, rounds: int) -> dict[str, tuple[float, list[float]]]:
    """Per step: median jobs/s, and its per-round ratios to the first step."""
    names = list(runners)
    for runner in runners.values():
        throughput.warm_up(runner)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        order = random.sample(names, len(names))
        for name in order:
            rates[name].append(jobs / runners[name](jobs))
        log.info("round %d done", round_index)
    base = rates[names[0]]
    return {name: (statistics.median(r), [x / y for x, y in zip(r, base, strict=True)]) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per step and round (default 500)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds (default 12)")
    parser.add_argument("--engines", type=int, default=2)
    args = parser.parse_args(argv)
    import moi
    from moi import connections

    with Services(args.engines) as services:
        redis_url = services.start_redis()
        url_file = services.start_cluster()
        moi.configure(redis_url=redis_url, contexts=f"bench={url_file}", default_context="bench")
        try:
            results = measure(steps(connections.get_context("bench"), connections.store()), args.jobs, args.rounds)
        finally:
            connections.reset()
    print(f"{args.rounds} rounds of {args.jobs} trivial jobs, {args.engines} engines\n")
    print("| step | jobs/s (median) | relative to raw, median | min | max |")
    print("|---|---:|---:|---:|---:|")
    for name, (rate, ratios) in results.items():
        print(f"| {name} | {rate:,.0f} | {statistics.median(ratios):.2f} | {min(ratios):.2f} | {max(ratios):.2f} |")


if __name__ == "__main__":
    main()
