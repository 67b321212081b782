"""Counters kept by the writes that end jobs, so ``/metrics`` reads a few hashes, never every job.

The write that moves a job to a final status also, in the same atomic step,
counts it by status and service (``moi:tally``) and, the first time it ends,
adds its durations to two histograms: ``wait`` (submitted to started) and
``run`` (started to ended). A histogram is kept as a count per bucket, not
cumulative, so an observation is one HINCRBY, plus its "sum"; ``moi.web.metrics``
adds the buckets up as Prometheus wants them. Each minute's ends are counted too,
for the operations page's chart of the last hour (``last_hour``).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from moi.core.info import TERMINAL, Info
from moi.core.keys import Keys

Command = list[str | int]

BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, math.inf)
SPANS = {"wait": ("date_created", "date_start"), "run": ("date_start", "date_end")}
SEPARATOR = "|"  # between status and service in a tally field; neither holds one
MINUTES_KEPT = 120  # the per-minute counts behind the operations page's last hour


def bucket_of(seconds: float) -> str:
    """The name of the first bucket that holds ``seconds``: its upper bound, as Prometheus writes it."""
    bound = next(bound for bound in BUCKETS if seconds <= bound)
    return "+Inf" if math.isinf(bound) else repr(bound)


def ending_commands(keys: Keys, new: Info, old_status: Any) -> list[Command]:
    """What goes with a write that changes a job's status: nothing, unless it ends the job (or ends it again,
    as a service job's Archived and Expired do: those are counted, its durations only once)."""
    status = new.get("status")
    if new.get("type") != "job" or status not in TERMINAL or status == old_status:
        return []
    commands: list[Command] = [["HINCRBY", keys.tally, f"{status}{SEPARATOR}{new.get('service') or ''}", 1]]
    if old_status in TERMINAL:
        return commands
    minute = keys.minute(int(time.time() // 60))
    commands += [["HINCRBY", minute, str(status), 1], ["EXPIRE", minute, MINUTES_KEPT * 60]]
    for span, (start, end) in SPANS.items():
        seconds = _between(new.get(start), new.get(end))
        if seconds is not None:
            commands.append(["HINCRBY", keys.histogram(span), bucket_of(seconds), 1])
            commands.append(["HINCRBYFLOAT", keys.histogram(span), "sum", f"{seconds:.6f}"])
    return commands


def _between(start: Any, end: Any) -> float | None:
    try:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except ValueError:  # a job that never started (cancelled while queued), or a date moi did not write
        return None
    return max(seconds, 0.0)


def last_hour(store: Any) -> list[dict[str, Any]]:
    """Jobs ended in each of the last 60 minutes, oldest first: ``{"minute": epoch seconds, status: count}``."""
    now = int(time.time() // 60)
    minutes = list(range(now - 59, now + 1))
    pipe = store.redis.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(store.keys.minute(minute))
    counts = pipe.execute()
    return [
        {"minute": minute * 60, **{k: int(v) for k, v in found.items()}}
        for minute, found in zip(minutes, counts, strict=True)
    ]
