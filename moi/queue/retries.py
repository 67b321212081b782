"""Jobs waiting for their next attempt: kept in their context's retry set, moved into its queue when due.

An attempt that failed and gets another (``moi.core.policy.next_attempt``) is written ``Queued`` with its
``retry_at`` and, in the same atomic write, put in ``Pmoi:retry:<ctx>`` scored by it (``retry_later``): the
job keeps its id and its place among its owner's unfinished jobs. The leading dispatcher of a context (each
tick) and every watchdog pass (for every context) move the due ones into their queue (``Retries.promote``,
the ``RETRY_DUE`` script): one round trip, whether anything is due or not. A cancel takes a waiting job out
of the retry set in the write that ends it (``moi.jobs.cancel``); TAKE clears ``retry_at``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from moi.core.info import Info
from moi.core.keys import Keys
from moi.core.lua_retry import RETRY_DUE, RETRY_TEMPLATES
from moi.queue.pause import Scope
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

MOST_PER_CONTEXT = 500  # due jobs one call moves per context; the rest go with the next
_MARK = "\x00"  # stands for the id or context in a key name, to split it around


def retry_later(keys: Keys, job_id: str, info: Info) -> list[list[str | int]]:
    """The commands that go with the write of ``info`` as it waits for its next attempt (``retry_at`` set)."""
    context = str(info.get("context"))
    return [
        ["ZADD", keys.retry(context), repr(float(info["retry_at"])), job_id],
        ["SADD", keys.retrying, context],
    ]


def leave_retry(keys: Keys, job_id: str, info: Info) -> list[list[str | int]]:
    """The command that takes a job out of its retry set (a cancel's write carries it); none for a job
    that can never wait for a retry, so a plain job's cancel costs nothing more."""
    if "max_attempts" not in info:
        return []
    return [["ZREM", keys.retry(str(info.get("context"))), job_id]]


class Retries:
    """Moves due retries into their queues, over one Store's Redis."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._due = store.redis.register_script(RETRY_DUE)

    def promote(self, contexts: Sequence[str] = (), moment: float | None = None) -> int:
        """Move the due jobs of ``contexts`` (none: of every context that has any waiting) into their queues;
        how many went. ``moment``: now, in epoch seconds."""
        keys = self.store.keys
        args: list[str | float | int] = [time.time() if moment is None else moment, MOST_PER_CONTEXT]
        args += [self.store.ttl, Scope("context", "").token, Scope("group", "").token]
        for name in RETRY_TEMPLATES:
            args += _around(getattr(keys, name))
        args += list(contexts)
        with reaching(self.store.url):
            return int(self._due(keys=[keys.retrying, keys.paused, keys.seq], args=args))

    def contexts(self) -> list[str]:
        """The contexts that have jobs waiting for their next attempt."""
        with reaching(self.store.url):
            return sorted(self.store.redis.smembers(self.store.keys.retrying))


def _around(name_of: Callable[[str], str]) -> list[str]:
    """A key name's text before and after the id or context it is made from."""
    before, _, after = name_of(_MARK).partition(_MARK)
    return [before, after]
