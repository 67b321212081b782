"""One task per ``Group`` that runs its work one piece at a time, in order.

Pub/sub messages (posted: nobody waits) and requests (called: the caller awaits the
outcome) go through the same queue, so they never interleave. A posted piece that fails
is logged (after an outage the hub re-syncs the group); a called one raises to its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import redis

from moi.core.errors import RedisRefused, RedisUnavailable
from moi.core.redact import printable

log = logging.getLogger("moi.group")

Work = Callable[[], Awaitable[None]]


class GroupWorker:
    def __init__(self, url: str, group_id: str) -> None:
        self.url = url  # of Redis, for the errors' messages
        self.group_id = group_id
        self.closed = False
        self._queue: asyncio.Queue[tuple[Work, asyncio.Future[None] | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"moi-group-{self.group_id}")

    def post(self, work: Work) -> None:
        """Queue work nobody waits for (a pub/sub message)."""
        if not self.closed:
            self._queue.put_nowait((work, None))

    async def call(self, work: Work) -> None:
        """Queue work and wait for it: its failure is raised here."""
        if self._task is None or self.closed:
            raise RuntimeError("the group is not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((work, future))
        await future

    async def close(self) -> None:
        """Run nothing more; the piece under way is cancelled."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that a step turned into another error (redis-py, or 3.11's wait_for, can): honoured
                # here, or the loop would wait on its queue for ever and hang whoever awaits its end.
                raise asyncio.CancelledError
            work, future = await self._queue.get()
            try:
                await work()
            except redis.ResponseError as error:
                # Redis answered (WRONGTYPE, NOAUTH, ...): not an outage, and no re-sync will fix it.
                self._fail(future, RedisRefused(self.url, error), "redis refused a command while following %s: %s")
            except (TimeoutError, redis.RedisError, OSError) as error:
                # The hub re-syncs us once Redis is back.
                failure: Exception = RedisUnavailable(self.url, error)
                self._fail(future, failure, "redis unavailable while following %s: %s")
            except Exception as error:
                self._fail(future, error, "while following %s: %s")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.closed or (task is not None and task.cancelling()):
                    raise
                # A cancelled wait inside a step; the worker itself carries on.
                self._fail(future, RedisUnavailable(self.url, "cancelled"), "%s: %s")
            else:
                if future is not None and not future.done():
                    future.set_result(None)

    def _fail(self, future: asyncio.Future[None] | None, error: Exception, text: str) -> None:
        if future is None:
            log.warning(text, self.group_id, printable(error))
        elif not future.done():
            future.set_exception(error)
