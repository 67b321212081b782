"""Where the time goes per job: ``python -m benchmarks.profile [--jobs N]``.

Profiles (pyinstrument) the submitting side of ``submit`` and of
``submit_many``, and the engine side (``moi.compute.worker.work`` taking, running and
recording queued jobs, called in this process against the same Redis, so the
profiler sees it), on its own Redis and cluster; prints microseconds per job
for each part, then the profiles.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from pyinstrument import Profiler

from benchmarks.services import Services
from benchmarks.tasks import trivial

log = logging.getLogger("benchmarks.profile")


def _timed(what: str, jobs: int, work: Callable[[], Any], profiles: list[str]) -> None:
    profiler = Profiler(interval=0.0002)
    start = time.perf_counter()
    with profiler:
        work()
    seconds = time.perf_counter() - start
    print(f"{what:<55} {seconds / jobs * 1e6:8.0f} us per job")
    profiles.append(f"===== {what} =====\n" + profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--quiet", action="store_true", help="the per-job table only, no profiles")
    args = parser.parse_args(argv)
    with Services(args.engines) as services:
        profiles = run(services, args.jobs)
    if not args.quiet:
        print("\n".join(profiles))


def run(services: Services, jobs: int) -> list[str]:
    import moi
    from moi import job
    from moi.compute import worker
    from moi.compute.context import by_name
    from moi.core.info import new_id, new_info
    from moi.jobs import connections
    from moi.queue import jobqueue as queue

    redis_url = services.start_redis()
    url_file = services.start_cluster()
    moi.configure(redis_url=redis_url, contexts=f"bench={url_file}", default_context="bench")
    ctx = connections.get_context("bench")
    store = connections.store()
    view = ctx.view
    profiles: list[str] = []
    view.apply_async(trivial).get(30)  # connections warm on every side
    job.submit(ctx, "profile", "warm", None, trivial)[2].get(30)

    from benchmarks import cpu, throughput

    print("CPU microseconds per job, by process (one round each):")
    for what, runner in (
        ("raw apply_async", throughput.raw_ipyparallel(ctx)),
        ("moi submit", throughput.moi_submit(ctx)),
        ("moi submit_many", throughput.moi_submit_many(ctx)),
    ):
        used = cpu.cpu_per_job(runner, jobs)
        print(f"  {what:<18} " + "  ".join(f"{role} {value:6.0f}" for role, value in sorted(used.items())))
    handles: list[Any] = []
    _timed(
        "raw apply_async, client side",
        jobs,
        lambda: handles.extend(view.apply_async(trivial) for _ in range(jobs)),
        profiles,
    )
    ctx.client.wait(handles, timeout=120)
    handles.clear()
    _timed(
        "moi submit, client side",
        jobs,
        lambda: handles.extend(job.submit(ctx, "profile", "p", None, trivial)[2] for _ in range(jobs)),
        profiles,
    )
    for handle in handles:
        handle.wait(120)
    box: list[Any] = []
    _timed(
        "moi submit_many, client side",
        jobs,
        lambda: box.append(job.submit_many(ctx, "profile", "p", None, trivial, [()] * jobs)),
        profiles,
    )
    box[0][2].wait(120)

    # The engine side, in this process: a queue no cluster works on, drained by moi's own work loop.
    local = queue.Queue(store)
    call = queue.pack_call(by_name(trivial), (), {}, None)
    pending = []
    for _ in range(jobs):
        job_id = new_id()
        pending.append((new_info(job_id, "p", "job", store.keys.channel(job_id), context="profile-local"), call, 0))
    local.enqueue("profile", "profile-local", pending)
    spec = worker.WorkSpec("profile-local", store.url, store.keys.prefix, store.ttl, linger=0.0)
    _timed("moi worker: take, run, record (engine side, in this process)", jobs, lambda: worker.work(spec), profiles)

    # The same for a batch's items: taken in blocks, recorded together.
    batch_id = new_id()
    local.keep_call(batch_id, call)
    items = []
    for _ in range(jobs):
        job_id = new_id()
        info = new_info(job_id, "p", "job", store.keys.channel(job_id), context="profile-local")
        items.append((info, queue.item_call(batch_id, ()), 0))
    local.enqueue("profile", "profile-local", items)
    _timed("moi worker: a batch's items, in blocks (engine side)", jobs, lambda: worker.work(spec), profiles)
    return profiles


if __name__ == "__main__":
    main()
