"""The Celery application the benchmark's Celery worker runs (``celery -A benchmarks.peers``).

Broker and result backend are the benchmark's own Redis, named by
``MOI_BENCH_REDIS_URL``; making the app connects to nothing.
"""

from __future__ import annotations

import os

from celery import Celery

_URL = os.environ.get("MOI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")

app = Celery("benchmarks", broker=_URL, backend=_URL)
app.conf.update(
    task_default_queue="bench",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="bench.trivial")
def trivial() -> int:
    return 1
