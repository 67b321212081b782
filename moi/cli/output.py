"""What the ``moi`` command prints and how it exits: a job as the seed's block, waiting for a job,
and exit statuses a script can tell apart."""

from __future__ import annotations

import math
import sys
import time
from datetime import datetime
from typing import Any, TypeGuard

from moi.compute import watchdog
from moi.core import policy, resources
from moi.core.info import SEED_FIELDS, Info, Status, is_finished
from moi.core.redact import printable
from moi.jobs import connections
from moi.upkeep import passes

# Exit statuses, so a script can tell a refusal from a job that ran and failed.
EXIT_ERROR = 1  # moi could not do what was asked (the one-line error says why)


EXIT_USAGE = 2  # a usage mistake: a bad or missing option (click's own code)


EXIT_JOB_FAILED = 3  # a job waited for (or any item of a batch) ended Failed or Cancelled


def format_info(info: Info) -> str:
    """The seed's block: a header, sorted ``key<tab>: value`` lines, result last."""
    lines = [f"********** {info['id']} **********"]
    extra = sorted(set(info) - set(SEED_FIELDS) - {"max_attempts"})  # shown with attempt: "2 of 4"
    for key in sorted(set(SEED_FIELDS) - {"result"}) + extra:
        lines.append(f"{key}{_tabs(key)}: {_shown_field(info, key)}")
    lines.append(f"result{_tabs('result')}: {_show_result(info.get('result'))}")
    return "\n".join(lines)


def _shown_field(info: Info, key: str) -> Any:
    """A field as a reader wants it: a time limit as 15m, "attempt 2 of 4", when the next retry is due,
    the earlier attempts' last lines; the others as they are."""
    value = info.get(key)
    if key in ("time_limit", "soft_time_limit") and isinstance(value, int | float):
        return policy.shown(float(value))
    if key == "attempt":
        return f"{value} of {info.get('max_attempts')}"
    if key == "backoff" and isinstance(value, list) and all(_finite(delay) for delay in value):
        return ", ".join(policy.shown(float(delay)) for delay in value)
    if key == "retry_on" and isinstance(value, list):
        return ", ".join(str(name) for name in value)
    if key == "retry_at" and _finite(value):
        return _due(value, info)
    if key == "resources" and isinstance(value, dict):
        return resources.shown(value) or "none"
    if key == "scheduler" and isinstance(value, dict):
        return scheduler_line(value)
    if key == "attempts" and isinstance(value, list):
        earlier = [f"\n  {_attempt_line(attempt)}" for attempt in value if isinstance(attempt, dict)]
        return f"{len(earlier)} earlier" + "".join(earlier)
    return value


def scheduler_line(seen: dict[str, Any]) -> str:
    """A scheduler job for a person: ``slurm job 1234 on this machine: PENDING (Resources), exit code 0``."""
    kind, job = printable(str(seen.get("kind", "?")), 20), seen.get("id")
    text = f"{kind} job {printable(str(job), 40)}" if job else f"{kind}, not submitted yet"
    if seen.get("where"):
        text += f" on {printable(str(seen['where']), 100)}"
    if seen.get("state"):
        text += f": {printable(str(seen['state']), 40)}"
    if seen.get("reason"):
        text += f" ({printable(str(seen['reason']), 200)})"
    if seen.get("exit_code") is not None:
        text += f", exit code {printable(str(seen['exit_code']), 10)}"
    return text


def _finite(value: Any) -> TypeGuard[float]:
    """A number moi can show as a duration or a date (not NaN, nor infinite); any other is shown as it is."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _due(value: float, info: Info) -> Any:
    """When the next retry is due, and how long until then; the value as it is when it is no date."""
    try:
        due = datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")
    except (OverflowError, OSError, ValueError):  # far past any date: written behind moi's back
        return value
    left = value - time.time()
    return f"{due} (in {policy.shown(float(max(1, round(left))))})" if left > 0 and not is_finished(info) else due


def _attempt_line(attempt: dict[str, Any]) -> str:
    """An earlier attempt: its number, engine and end, and its result's last line (a traceback's says what failed)."""
    result = attempt.get("result")
    lines = [line for line in result.splitlines() if line.strip()] if isinstance(result, str) else [repr(result)]
    last = printable(lines[-1] if lines else "", 200)
    return f"attempt {attempt.get('attempt')} on {attempt.get('engine')}, ended {attempt.get('date_end')}: {last}"


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
