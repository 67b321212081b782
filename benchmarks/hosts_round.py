"""One round of the hosts benchmark in its own process: ``python -m benchmarks.hosts_round CONTEXT N BATCH``.

Configured by the environment (``MOI_REDIS_URL``, ``MOI_CONTEXTS``), so that the
same code measures engines on this host and engines on other hosts. Prints one
JSON line: jobs per second one by one and in ``submit_many``, and the hosts that ran them.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from benchmarks.throughput import moi_submit, moi_submit_many, warm_up
from moi.jobs import connections


def main(context: str, jobs: int, batch: int) -> None:
    ctx = connections.get_context(context)
    one, many = moi_submit(ctx), moi_submit_many(ctx)
    warm_up(one)
    rates = {"one": jobs / one(jobs), "many": batch / many(batch)}
    print(json.dumps({**rates, "hosts": _jobs_per_host()}))


def _jobs_per_host() -> dict[str, int]:
    """How many of the jobs stored ran on each host (every page of the index)."""
    from moi.queue.listing import Filters, page

    store, counts, cursor = connections.store(), Counter[str](), None
    while True:
        found, cursor = page(store, store.keys.index_all, Filters(), 1000, cursor)
        counts.update(str(info.get("engine", "")).rsplit(":", 1)[0] for info in found)
        if cursor is None:
            return dict(counts)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
