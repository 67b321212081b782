"""What the ``moi`` command prints and how it exits: a job as the seed's block, waiting for a job,
and exit statuses a script can tell apart."""

from __future__ import annotations

import sys
import time
from typing import Any

from moi.compute import watchdog
from moi.core.info import SEED_FIELDS, Info, Status, is_finished
from moi.jobs import connections
from moi.upkeep import passes

# Exit statuses, so a script can tell a refusal from a job that ran and failed.
EXIT_ERROR = 1  # moi could not do what was asked (the one-line error says why)


EXIT_USAGE = 2  # a usage mistake: a bad or missing option (click's own code)


EXIT_JOB_FAILED = 3  # a job waited for (or any item of a batch) ended Failed or Cancelled


def format_info(info: Info) -> str:
    """The seed's block: a header, sorted ``key<tab>: value`` lines, result last."""
    lines = [f"********** {info['id']} **********"]
    extra = sorted(set(info) - set(SEED_FIELDS))
    for key in sorted(set(SEED_FIELDS) - {"result"}) + extra:
        lines.append(f"{key}{_tabs(key)}: {info.get(key)}")
    lines.append(f"result{_tabs('result')}: {_show_result(info.get('result'))}")
    return "\n".join(lines)


def _tabs(key: str) -> str:
    return "\t" if len(key) >= 8 else "\t\t"


def _show_result(result: Any) -> str:
    # Tracebacks and text print as they are, so they read as they would in a terminal.
    return result if isinstance(result, str) else repr(result)


def wait_for(job_id: str, timeout: float | None = None, poll: float = 1.0) -> Info:
    """Block until the job is finished; listens for its updates, re-reads on each.

    Raises TimeoutError when ``timeout`` seconds pass first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    store = connections.store()
    # A waiter watches too: a job whose engine died ends even if nothing else runs a watchdog.
    guard, next_check = watchdog.Watchdog(store), time.monotonic() + watchdog.INTERVAL
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.keys.channel(job_id))  # before reading: no update can slip by
    try:
        info = store.get(job_id)
        while not is_finished(info):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info['status']} after {timeout}s")
            pubsub.get_message(timeout=poll)
            if time.monotonic() >= next_check:
                passes.check_logging(guard)
                next_check = time.monotonic() + watchdog.INTERVAL
            info = store.get(job_id)
        return info
    finally:
        pubsub.close()


def exit_if_failed(infos: list[Info]) -> None:
    """Exit EXIT_JOB_FAILED when any job waited for did not succeed: ``moi submit --block && next`` stops."""
    if any(info["status"] in (Status.FAILED, Status.CANCELLED) for info in infos):
        sys.exit(EXIT_JOB_FAILED)
