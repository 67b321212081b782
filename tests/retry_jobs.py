"""Job functions for the time-limit and retry tests (engines import them by reference), and engines of the
tests' own: ``worker.work`` in a subprocess, which a test may SIGKILL or SIGSTOP without hurting the
session's cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from moi.compute.engine import current_job
from moi.core.errors import JobSoftTimeLimit, JobTimeLimit


def attempt_now() -> int:
    """The attempt of the job this engine runs (1 for a job without attempts)."""
    return int(current_job()[1].get("attempt") or 1)


def sleep_long(seconds: float = 3600, **kwargs: Any) -> float:
    time.sleep(seconds)
    return seconds


def warned_in_time(**kwargs: Any) -> str:
    """Catches its soft time limit's warning and ends, well within its hard limit."""
    try:
        time.sleep(60)
    except JobSoftTimeLimit:
        return "warned"
    return "never warned"


def fails_until(good: int, **kwargs: Any) -> int:
    """Fails (OSError) until its attempt ``good``, which returns its attempt."""
    attempt = attempt_now()
    if attempt < good:
        raise OSError(f"attempt {attempt} failed on purpose")
    return attempt


def value_error(**kwargs: Any) -> None:
    raise ValueError("not a failure retry_on names")


def attempt_then_wait(marks: str, **kwargs: Any) -> str:
    """Notes its attempt and its engine's pid, then waits for ``release-<attempt>`` in ``marks``; notes
    ``finished-<attempt>`` as it returns (an attempt interrupted never does)."""
    attempt = attempt_now()
    Path(marks, f"started-{attempt}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not Path(marks, f"release-{attempt}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    Path(marks, f"finished-{attempt}").touch()
    return f"attempt {attempt}"


def ignores_time_limit(**kwargs: Any) -> str:
    """Catches its hard time limit, and goes on regardless."""
    for _ in range(600):
        try:
            time.sleep(1)
        except JobTimeLimit:
            continue
    return "went on"


def start_engine(context: str, redis_url: str, ttl: int, log: Path, heartbeat_ttl: int = 2) -> subprocess.Popen[bytes]:
    """An engine working for ``context`` only (no cluster: ``worker.work`` in a process of its own), with a
    short heartbeat so the watchdog sees it lost soon, and a short grace after a hard time limit."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(name)s %(levelname)s %(message)s')\n"
        "from moi.compute import time_limits, worker\n"
        "time_limits.GRACE = 1.0\n"
        f"worker.work(worker.WorkSpec({context!r}, {redis_url!r}, '', {ttl}, linger=600))\n"
    )
    with open(log, "wb") as out:
        env = {**os.environ, "MOI_HEARTBEAT_TTL": str(heartbeat_ttl)}
        return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=env)


def fails_once(marks: str, n: int, **kwargs: Any) -> int:
    """Fails (OSError) the first time it runs for ``n``, then returns ``n`` (a batch item has no current_job)."""
    mark = Path(marks, f"failed-{n}")
    if not mark.exists():
        mark.touch()
        raise OSError(f"item {n} fails once")
    return n


def cancels_itself_then_fails(**kwargs: Any) -> None:
    """Asks for its own cancel (as a user would, while it runs: only the flag is set), then fails at once,
    before a heartbeat can see the flag: its retry's write meets the flag."""
    from moi.jobs.cancel import cancel

    store, info = current_job()
    assert cancel(info["id"], store).requested == [info["id"]]
    raise OSError("failed as its cancel was asked")


def here(**kwargs: Any) -> str:
    """The directory the job runs in."""
    return os.getcwd()
