"""The benchmark: ``python -m benchmarks [--quick]`` prints one table.

It starts everything it needs itself (a redis-server on a free port, a local
ipyparallel cluster, a Celery worker and RQ workers on that Redis), measures
every figure several times, interleaving the systems so that each round sees
the same machine, and stops everything it started.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import redis_cost, throughput
from benchmarks.services import Services
from benchmarks.stats import Figure, table

log = logging.getLogger("benchmarks.run")

CONTEXT = "bench"
# and "files", "services", "api", "hosts", "schedulers-per-job": run when asked for (--only hosts)
SECTIONS = ("throughput", "redis", "live")


@dataclass
class Plan:
    runs: int
    jobs: int  # per throughput round, one by one
    batch_jobs: int  # per submit_many round
    clients: int  # websocket clients for the fan-out
    latency_samples: int
    engines: int
    scheme: str | None
    peers: bool
    sections: frozenset[str]


def parse(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller rounds (a smoke run)")
    parser.add_argument("--runs", type=int, help="rounds per figure (default 5, quick 2)")
    parser.add_argument("--jobs", type=int, help="jobs per one-by-one round (default 1000, quick 200)")
    parser.add_argument("--batch-jobs", type=int, help="jobs per submit_many round (default 10000, quick 2000)")
    parser.add_argument("--clients", type=int, help="websocket clients in the fan-out (default 1000, quick 200)")
    parser.add_argument("--engines", type=int, default=os.cpu_count() or 1, help="engines (default: CPU count)")
    parser.add_argument("--scheme", default=None, help="ipyparallel task scheduler (default: what moi's runtime uses)")
    parser.add_argument("--no-peers", action="store_true", help="skip Celery and RQ")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of sections to run (default: {','.join(SECTIONS)})"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    return Plan(
        runs=args.runs or (2 if quick else 5),
        jobs=args.jobs or (200 if quick else 1000),
        batch_jobs=args.batch_jobs or (2000 if quick else 10000),
        clients=args.clients or (200 if quick else 1000),
        latency_samples=100 if quick else 300,
        engines=args.engines,
        scheme=args.scheme,
        peers=not args.no_peers,
        sections=frozenset(args.only.split(",")),
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    plan = parse(argv)
    started = time.monotonic()
    with Services(plan.engines, plan.scheme or default_scheme()) as services:
        sections = measure(plan, services)
    print(header(plan, time.monotonic() - started))
    print(table(sections))


def default_scheme() -> str:
    """The scheduler moi's own runtime starts its cluster with."""
    from moi.core.config import Settings

    return Settings().scheduler


def measure(plan: Plan, services: Services) -> list[tuple[str, list[Figure]]]:
    import moi

    redis_url = services.start_redis()
    url_file = services.start_cluster()
    if plan.peers and "throughput" in plan.sections:
        services.start_celery()
        services.start_rq()
    moi.configure(redis_url=redis_url, contexts=f"{CONTEXT}={url_file}", default_context=CONTEXT)
    from moi.jobs import connections

    ctx = connections.get_context(CONTEXT)
    sections = []
    if "throughput" in plan.sections:
        sections.append(throughput.measure(plan, ctx, redis_url))
    if "redis" in plan.sections:
        sections.append(redis_cost.measure(plan, ctx, redis_url))
    if "live" in plan.sections:
        from benchmarks import live

        sections += live.measure(plan, services)
    if "services" in plan.sections:
        from benchmarks import service_jobs

        sections.append(service_jobs.measure(plan, services))
    if "files" in plan.sections:
        from benchmarks import files

        sections.append(files.measure(plan, services))
    if "api" in plan.sections:
        from benchmarks import api

        sections.append(api.measure(plan, services))
    if "hosts" in plan.sections:
        from benchmarks import hosts

        sections.append(hosts.measure(plan, services))
    if "schedulers-per-job" in plan.sections:
        from benchmarks import per_job

        sections.append(per_job.measure(plan, services))
    return sections


def header(plan: Plan, seconds: float) -> str:
    cpu = _cpu_model()
    return (
        f"moi benchmark: {platform.node()} - {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{plan.engines} engines, scheduler {plan.scheme or default_scheme()}; {plan.runs} runs per figure, "
        f"{plan.jobs} jobs one by one, {plan.batch_jobs} in submit_many; took {seconds:.0f}s\n"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
