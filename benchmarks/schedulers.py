"""Cluster tuning: ``python -m benchmarks.schedulers [--schemes ...] [--engines ...]``.

For every (task scheduler, engine count) it starts a fresh local cluster on
one shared Redis and measures raw ``apply_async``, moi ``submit`` and
``submit_many`` throughput (median of a few rounds); prints one table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import throughput
from benchmarks.services import Services
from benchmarks.stats import Figure

log = logging.getLogger("benchmarks.schedulers")


def measure(scheme: str, engines: int, runs: int, jobs: int, batch_jobs: int) -> list[Figure]:
    import moi
    from moi.jobs import connections

    with Services(engines, scheme) as services:
        redis_url = services.start_redis()
        url_file = services.start_cluster()
        moi.configure(redis_url=redis_url, contexts=f"bench={url_file}", default_context="bench")
        try:
            ctx = connections.get_context("bench")
            runners = {
                "raw apply_async": (throughput.raw_ipyparallel(ctx), jobs),
                "moi submit": (throughput.moi_submit(ctx), jobs),
                "moi submit_many": (throughput.moi_submit_many(ctx), batch_jobs),
            }
            figures = {name: Figure(name, "jobs/s") for name in runners}
            for runner, _ in runners.values():
                throughput.warm_up(runner)
            for _ in range(runs):
                for name, (runner, n) in runners.items():
                    figures[name].add(n / runner(n))
            return list(figures.values())
        finally:
            connections.reset()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.schedulers")
    # "weighted" is left out: with it, tasks stalled in our runs (none finished within the time bound).
    parser.add_argument("--schemes", default="leastload,leastload+hwm=0,lru,twobin,plainrandom,pure")
    parser.add_argument("--engines", default="2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--batch-jobs", type=int, default=5000)
    args = parser.parse_args(argv)
    print("| scheduler | engines | raw apply_async jobs/s | moi submit jobs/s | submit/raw | moi submit_many jobs/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for engines in (int(n) for n in args.engines.split(",")):
        for scheme in args.schemes.split(","):
            raw, one, many = measure(scheme, engines, args.runs, args.jobs, args.batch_jobs)
            print(
                f"| {scheme} | {engines} | {raw.median:,.0f} | {one.median:,.0f} | "
                f"{one.median / raw.median:.2f} | {many.median:,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
