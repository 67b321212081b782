"""The job functions every system in the benchmark runs (importable by engines and workers)."""

from __future__ import annotations

import functools
import time
from typing import Any

import redis


def trivial(*args: Any, **kwargs: Any) -> int:
    """The unit of work for throughput: nothing, so only the overhead is measured."""
    return 1


def stamp(*args: Any, **kwargs: Any) -> float:
    """The wall-clock time at the job's end (the latency benchmarks start there)."""
    return time.time()


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(url)


def publish_stamp(redis_url: str, channel: str) -> float:
    """The Redis-only baseline: an engine publishes the time itself, as a job's end would."""
    client = _client(redis_url)
    now = time.time()
    client.publish(channel, repr(now))
    return now
