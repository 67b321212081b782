"""Long-lived loops go on: each item's failure is logged in one line, counted, and passed over.

The watchdog, the sweeper (gone jobs' directories, retention), the mail sender, the
dispatchers, the relay (a server's pub/sub reader) and the runtime's supervisor (its engines)
each work through items: a job, a directory, a mail, a message, a look at the engines. One
that fails costs only itself. ``failed`` (or ``item``, around one item) logs one line on the
loop's own logger and counts it in Redis, in the hash
``Pmoi:loops``: ``<loop>`` -> items failed, ``<loop>:restarts`` -> threads found dead and
started again (``restarted``), ``<loop>:last`` -> JSON ``{"error": line, "at": epoch}``.
``/metrics`` (``moi_loop_errors_total``, ``moi_loop_restarts_total``) and ``moi status``
read them back, from any process. A Redis outage is not an item's failure: it cannot be
counted there, and the loops log it and retry as they always did.

The same line repeated (one bad job, looked at every pass) is logged once per ``QUIET``
seconds; every occurrence is counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moi.core.errors import MoiError, RedisUnavailable
from moi.core.keys import Keys
from moi.core.redact import printable
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

LOOPS = ("watchdog", "sweeper", "mail", "dispatcher", "relay", "supervisor")  # supervisor: the runtime's engines
QUIET = 600.0  # seconds before the same failure line is logged again (it is counted every time)

log = logging.getLogger("moi.loops")
_logged: dict[str, float] = {}  # line -> when it was last logged, in this process
_logged_lock = threading.Lock()


@dataclass(frozen=True)
class Record:
    """What ``Pmoi:loops`` holds for one loop."""

    errors: int = 0
    restarts: int = 0
    last: str = ""
    at: float = 0.0


def one_line(error: BaseException) -> str:
    """An exception as one printable line: its type and the first line of its message."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return printable(f"{type(error).__name__}: {first}" if first else type(error).__name__, 300)


@contextmanager
def item(store: Store, loop: str, what: str, logger: logging.Logger) -> Iterator[None]:
    """Around one item of a loop: its failure is logged and counted, and the loop goes on after the block.

    RedisUnavailable goes through: an outage is the whole pass's, not this item's.
    """
    try:
        yield
    except RedisUnavailable:
        raise
    except Exception as error:
        failed(store, loop, what, error, logger)


def failed(store: Store, loop: str, what: str, error: BaseException, logger: logging.Logger) -> str:
    """Log one line for an item ``loop`` failed on and count it; the line."""
    line = f"{what}: {one_line(error)}"
    say(logger, f"{loop}: {what} failed, going on: {one_line(error)}")
    count(store, loop, line)
    return line


def restarted(store: Store, loop: str, why: str, logger: logging.Logger) -> None:
    """Report a loop's thread found dead and started again."""
    logger.warning("%s: %s; started it again", loop, printable(why, 300))
    count(store, loop, why, restart=True)


def say(logger: logging.Logger, line: str) -> None:
    """``logger.warning(line)``, unless this process logged that line in the last ``QUIET`` seconds (then at debug)."""
    moment = time.monotonic()
    with _logged_lock:
        quiet = moment - _logged.get(line, -QUIET) < QUIET
        if not quiet:
            if len(_logged) > 1000:  # many different lines: forget them rather than grow
                _logged.clear()
            _logged[line] = moment
    logger.log(logging.DEBUG if quiet else logging.WARNING, "%s", line)


def queue_count(pipe: Any, keys: Keys, loop: str, line: str, restart: bool = False) -> None:
    """The commands that count one failure (or restart) of ``loop``, queued on a pipeline (sync or asyncio)."""
    pipe.hincrby(keys.loops, f"{loop}:restarts" if restart else loop, 1)
    pipe.hset(keys.loops, f"{loop}:last", json.dumps({"error": line, "at": time.time()}))


def count(store: Store, loop: str, line: str, restart: bool = False) -> None:
    """Count one failure (or restart) of ``loop`` in Redis; logged, never raised, when Redis refuses."""
    pipe = store.redis.pipeline(transaction=False)
    queue_count(pipe, store.keys, loop, line, restart)
    try:
        with reaching(store.url):
            pipe.execute()
    except MoiError as error:
        log.warning("a failure of the %s loop was not counted: %s", loop, error)


def read(store: Store) -> dict[str, Record]:
    """Every loop's record (the known ones first, at zero when nothing failed)."""
    with reaching(store.url):
        raw = store.redis.hgetall(store.keys.loops)
    return parse(raw)


def parse(raw: dict[str, str]) -> dict[str, Record]:
    names = list(LOOPS) + sorted({field.split(":")[0] for field in raw} - set(LOOPS))
    found = {}
    for name in names:
        last = _last(raw.get(f"{name}:last"))
        found[name] = Record(_int(raw.get(name)), _int(raw.get(f"{name}:restarts")), *last)
    return found


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _last(text: str | None) -> tuple[str, float]:
    try:
        value = json.loads(text or "{}")
        return str(value.get("error", "")), float(value.get("at", 0.0))
    except (ValueError, TypeError, AttributeError):
        return "", 0.0
