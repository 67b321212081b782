"""One shared Redis pub/sub connection for every listener in a server process.

The original moi opened a pub/sub connection per websocket, so connections
grew with the number of open pages and leaked when pages went away. A
``Hub`` owns exactly one ``PubSub`` connection and one small, bounded pool
for reads, however many ``Group``\\ s (and sockets) use it:

- ``await hub.subscribe(channel, listener)`` subscribes the channel on its
  first listener and returns only once Redis has confirmed the subscription,
  so a caller that reads Redis afterwards cannot miss a change made after
  the read;
- ``await hub.unsubscribe(channel, listener)`` unsubscribes on the last one;
- one reader task parses each payload once and hands it to the channel's
  listeners (``listener.message(channel, payload)``), which must not block;
- when the pub/sub connection drops, the reader reconnects with backoff,
  subscribes every channel again, and calls ``listener.resync()`` on every
  listener, because messages published meanwhile are lost. ``reconnect()``
  does the same on demand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from moi.core.keys import Keys
from moi.core.redact import printable
from moi.storage import loops, redis_clients

log = logging.getLogger("moi.hub")

READ_CONNECTIONS = 4
BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
# How long a subscribe or a read waits for Redis before giving up.
REDIS_TIMEOUT = 10.0
# Names in Redis's CLIENT LIST, so a process's connections can be counted.
READ_CLIENT_NAME = "moi-hub-read"
PUBSUB_CLIENT_NAME = "moi-hub-pubsub"
# Messages the reader hands out before it lets the event loop run the listeners' work.
YIELD_EVERY = 32


# Called with what a batched read found (one value or None per key), or with the error.
Reply = Callable[[list[str | None] | BaseException], None]


class Listener(Protocol):
    def message(self, channel: str, payload: dict[str, Any]) -> None:
        """A decoded ``{action: [ids]}`` payload published on ``channel``."""

    def resync(self) -> None:
        """Messages may have been lost (Redis dropped): read the state again."""


class Hub:
    def __init__(self, url: str, keys: Keys, ttl: int, read_connections: int = READ_CONNECTIONS) -> None:
        self.url = url
        self.keys = keys
        self.ttl = ttl
        pool: Any = redis_clients.async_blocking_pool(
            url,
            max_connections=read_connections,
            timeout=REDIS_TIMEOUT,
            decode_responses=True,
            client_name=READ_CLIENT_NAME,
        )
        # Reads share this small pool; callers wait for a free connection.
        self.redis: aioredis.Redis[str] = aioredis.Redis(connection_pool=pool, decode_responses=True)
        self._listeners: dict[str, set[Listener]] = {}
        # Futures waiting for Redis to confirm a SUBSCRIBE, per channel, in
        # the order the commands were sent (confirmations come in that order).
        self._confirming: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # Held while a command goes out on the pub/sub connection and while it is dropped:
        # redis-py's PubSub would otherwise open a fresh (leaked) connection for a late command.
        self._sending = asyncio.Lock()
        self._resyncing: asyncio.Task[None] | None = None
        self._closed = False
        self.reconnects = 0
        self.frames_sent = 0  # by this process's sockets, for /metrics
        # Reads asked for in the same turn of the event loop, sent as one MGET.
        self._reads: list[tuple[list[str], Reply]] = []
        self._reads_flush: asyncio.Task[None] | None = None
        self._counting: set[asyncio.Task[None]] = set()  # failures being counted in Redis

    # public ------------------------------------------------------------------

    @property
    def channels(self) -> list[str]:
        """The channels subscribed now (each once, whatever its listener count)."""
        return sorted(self._listeners)

    def listener_count(self, channel: str) -> int:
        return len(self._listeners.get(channel, ()))

    async def subscribe(self, channels: list[str], listener: Listener) -> None:
        """Add ``listener`` to ``channels``; returns once Redis confirmed new ones."""
        await self._start()
        new, pending = [], []
        for channel in channels:
            listeners = self._listeners.setdefault(channel, set())
            if not listeners:
                new.append(channel)
            elif self._confirming.get(channel):
                pending.append(self._confirming[channel][-1])  # someone else's, not yet confirmed
            listeners.add(listener)
        futures = self._expect_confirmations(new)
        if new:
            await self._send("SUBSCRIBE", new)
        await self._confirmed(futures + pending)

    async def mget(self, keys: list[str]) -> list[str | None]:
        """``MGET keys``, merged with the other reads of this loop turn into one round trip.

        A burst of updates (one per followed group) then costs a few MGETs, not one each.
        """
        future: asyncio.Future[list[str | None]] = asyncio.get_running_loop().create_future()

        def settle(values: list[str | None] | BaseException) -> None:
            if future.done():  # its reader was cancelled meanwhile
                return
            if isinstance(values, BaseException):
                future.set_exception(values)
            else:
                future.set_result(values)

        self.read_soon(keys, settle)
        return await future

    def read_soon(self, keys: list[str], reply: Reply) -> None:
        """``mget`` for callers that must not wait: ``reply(values or error)`` is called later.

        A listener uses it from ``message``, which must not block.
        """
        self._reads.append((keys, reply))
        if self._reads_flush is None:
            self._reads_flush = asyncio.get_running_loop().create_task(self._flush_reads())

    async def _flush_reads(self) -> None:
        await asyncio.sleep(0)  # one turn: every reader woken by the same burst joins in
        batch, self._reads, self._reads_flush = self._reads, [], None
        try:
            values = await asyncio.wait_for(self.redis.mget([key for keys, _ in batch for key in keys]), REDIS_TIMEOUT)
        except (redis.RedisError, OSError, TimeoutError) as error:
            for _, reply in batch:
                self._reply(reply, error)
            return
        start = 0
        for keys, reply in batch:
            self._reply(reply, values[start : start + len(keys)])
            start += len(keys)

    def _reply(self, reply: Reply, values: list[str | None] | BaseException) -> None:
        try:
            reply(values)
        except Exception as error:  # one broken reader must not cost the others their values
            self._failed("a read's reply", error)

    def _failed(self, what: str, error: BaseException) -> None:
        """One line for an item the relay failed on, counted in Redis (``moi.storage.loops``) without waiting for it."""
        line = f"{what}: {loops.one_line(error)}"
        loops.say(log, f"relay: {what} failed, going on: {loops.one_line(error)}")
        counting = asyncio.get_running_loop().create_task(self._count(line))
        self._counting.add(counting)  # held: the loop keeps only a weak reference to a task
        counting.add_done_callback(self._counting.discard)

    async def _count(self, line: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        loops.queue_count(pipe, self.keys, "relay", line)
        try:
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        except (redis.RedisError, OSError, TimeoutError) as error:
            log.warning("a failure of the relay was not counted: %s", error)

    async def unsubscribe(self, channels: list[str], listener: Listener) -> None:
        gone = []
        for channel in channels:
            listeners = self._listeners.get(channel)
            if listeners is None:
                continue
            listeners.discard(listener)
            if not listeners:
                del self._listeners[channel]
                gone.append(channel)
        if gone:
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                await self._send("UNSUBSCRIBE", gone)

    async def reconnect(self) -> None:
        """Drop the pub/sub connection; the reader reconnects and re-syncs everyone."""
        if self._pubsub is not None and self._connected.is_set():
            with contextlib.suppress(redis.RedisError, OSError):
                await self._pubsub.connection.disconnect()

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._drop_pubsub()
        if self._counting:  # failures being counted: let them land first
            await asyncio.wait(set(self._counting), timeout=REDIS_TIMEOUT)
        await cast(Any, self.redis).aclose()
        await self.redis.connection_pool.disconnect()  # a pool passed in is not closed with its client
        self._fail_confirming(redis.ConnectionError("hub closed"))

    # the connection ----------------------------------------------------------

    async def _start(self) -> None:
        if self._closed:
            raise RuntimeError("the hub is closed")
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._run(), name="moi-hub-reader")
        await asyncio.wait_for(self._connected.wait(), REDIS_TIMEOUT)

    async def _connect(self) -> None:
        # No retries inside redis-py: a silent internal reconnect would lose
        # messages without anyone knowing to re-sync.
        client = redis_clients.async_client(
            self.url,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_keepalive=True,
            client_name=PUBSUB_CLIENT_NAME,
        )
        pubsub: Any = client.pubsub()
        try:
            await pubsub.connect()
        except BaseException:  # cancelled (hub closing) or refused: leave no connection behind
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()
                await client.connection_pool.disconnect()
            raise
        self._pubsub = pubsub
        self._connected.set()

    async def _resubscribe(self) -> None:
        """After a reconnect: subscribe everything again, then have everyone re-read."""
        channels = list(self._listeners)
        futures = self._expect_confirmations(channels)
        if channels:
            await self._send("SUBSCRIBE", channels)
        # Pooled read connections may have died with the old server: the re-read would fail on them.
        await self.redis.connection_pool.disconnect()

        async def resync_when_confirmed() -> None:
            # Re-reading before Redis confirms could miss a change made in between.
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                await self._confirmed(futures)
                self._resync_all()

        self._resyncing = asyncio.get_running_loop().create_task(resync_when_confirmed())

    def _expect_confirmations(self, channels: list[str]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        futures = []
        for channel in channels:
            future: asyncio.Future[None] = loop.create_future()
            self._confirming.setdefault(channel, collections.deque()).append(future)
            futures.append(future)
        return futures

    @staticmethod
    async def _confirmed(futures: list[asyncio.Future[None]]) -> None:
        # asyncio.wait, not wait_for: a timeout must not cancel futures others share.
        if not futures:
            return
        done, waiting = await asyncio.wait(futures, timeout=REDIS_TIMEOUT)
        if waiting:
            raise redis.TimeoutError("redis did not confirm a subscription")
        for future in done:
            if future.cancelled():
                raise redis.ConnectionError("subscription abandoned")
            future.result()

    async def _send(self, command: str, channels: list[str]) -> None:
        """SUBSCRIBE or UNSUBSCRIBE on the current connection; never opens another one."""
        async with self._sending:
            if self._pubsub is None:
                raise redis.ConnectionError("the pub/sub connection is down")
            method = self._pubsub.subscribe if command == "SUBSCRIBE" else self._pubsub.unsubscribe
            await asyncio.wait_for(method(*channels), REDIS_TIMEOUT)

    async def _drop_pubsub(self) -> None:
        async with self._sending:
            self._connected.clear()
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.connection_pool.disconnect()

    async def _run(self) -> None:
        delay = BACKOFF_START
        first = True
        while not self._closed:
            try:
                await self._connect()
                if not first:
                    await self._resubscribe()
                first, delay = False, BACKOFF_START
                await self._read()
            except (redis.RedisError, OSError) as error:
                log.warning("redis pub/sub connection lost (%s); reconnecting in %.1fs", error, delay)
            except Exception as error:  # the reader must outlive any surprise: every socket depends on it
                self._failed("reading pub/sub (reconnecting)", error)
            await self._drop_pubsub()
            self._fail_confirming(redis.ConnectionError("redis pub/sub connection lost"))
            if not first:
                self.reconnects += 1
            first = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)

    async def _read(self) -> None:
        handled = 0
        while True:
            message = await self._pubsub.get_message(timeout=None)
            if message is not None:
                self._dispatch(message)
            handled += 1
            if handled % YIELD_EVERY == 0:
                # A burst is already buffered, so the reads above never suspend: let the
                # groups woken so far read and send now, rather than after the whole burst.
                await asyncio.sleep(0)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            waiting = self._confirming.get(channel)
            if waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(None)
                if not waiting:
                    del self._confirming[channel]
            return
        if kind != "message":
            return
        try:
            payload = json.loads(message["data"])
        except (ValueError, RecursionError):  # a deeply nested payload must not end the reader
            log.warning("ignoring a payload that is not JSON on %s", channel)
            return
        if not isinstance(payload, dict):
            log.warning("ignoring a payload that is not an object on %s", channel)
            return
        for listener in list(self._listeners.get(channel, ())):
            try:
                listener.message(channel, payload)
            except Exception as error:  # one broken listener must not stop the reader for all
                self._failed(f"a listener on {printable(channel)}", error)

    def _resync_all(self) -> None:
        listeners = {listener for group in self._listeners.values() for listener in group}
        log.info("pub/sub reconnected; re-syncing %d listeners", len(listeners))
        for listener in listeners:
            listener.resync()

    def _fail_confirming(self, error: Exception) -> None:
        for waiting in self._confirming.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # whoever waits sees it; nobody waiting is fine too
        self._confirming.clear()
