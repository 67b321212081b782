"""``submit_many`` round by round: ``python -m benchmarks.batch_rounds [--items N] [--rounds R]``.

Prints, for each round of N trivial items on its own Redis and cluster, the
time to store them all, the time from there to all done, the items per
second, and the Redis CPU per item. To compare two checkouts, run it in each,
alternating, with ``PYTHONPATH`` set to the checkout: this VM's speed drifts
by tens of percent within minutes, so only interleaved rounds compare.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks.services import Services
from benchmarks.tasks import trivial


def _redis_cpu(client: object) -> float:
    info = client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"] + info["used_cpu_sys"])


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_rounds")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", type=int, default=2)
    args = parser.parse_args(argv)

    import moi
    from moi import job
    from moi.jobs import connections

    with Services(args.engines) as services:
        redis_url = services.start_redis()
        url_file = services.start_cluster()
        moi.configure(redis_url=redis_url, contexts=f"bench={url_file}", default_context="bench")
        ctx = connections.get_context("bench")
        client = connections.store().redis
        job.submit(ctx, "rounds", "warm", None, trivial)[2].get(30)
        for _ in range(args.rounds):
            cpu = _redis_cpu(client)
            start = time.perf_counter()
            _, _, batch = job.submit_many(ctx, "rounds", "trivial", None, trivial, [()] * args.items)
            stored = time.perf_counter()
            batch.wait(300)
            done = time.perf_counter()
            per_item = (_redis_cpu(client) - cpu) / args.items * 1e6
            print(
                f"stored in {stored - start:.3f}s, all done {done - stored:.3f}s later: "
                f"{args.items / (done - start):,.0f} items/s, Redis CPU {per_item:.0f} us per item"
            )
            time.sleep(3)  # engines stop waiting for work between rounds


if __name__ == "__main__":
    main()
