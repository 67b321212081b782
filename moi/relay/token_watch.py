"""A socket opened with a Bearer token lives no longer than its token.

When the token is revoked (announced on ``moi:tokens:revoked``, which every server's
hub hears) or expires, ``TokenWatch`` tells its socket (``token_gone``), which sends an
error frame and closes (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

import redis

from moi.core.errors import MoiError, RedisUnavailable
from moi.relay.closing_tasks import in_background
from moi.relay.hub import Hub
from moi.storage import tokens

MAX_TIMER = 7 * 86400.0  # seconds: the longest single timer for an expiry


class TokenHolder(Protocol):
    """A socket opened with a token, as its watch sees it."""

    @property
    def hub(self) -> Hub: ...

    def token_gone(self) -> None: ...


class TokenWatch:
    """Ends a socket opened with a token when the token is revoked (heard on ``moi:tokens:revoked``,
    from any server) or expires (a timer). When the hub lost messages it asks Redis again."""

    def __init__(self, socket: TokenHolder, token: tokens.Token) -> None:
        self.socket, self.token = socket, token
        self.channel = socket.hub.keys.tokens_revoked
        self._expiry: asyncio.TimerHandle | None = None
        self._stopped = False

    async def start(self) -> None:
        self._arm()
        try:
            await self.socket.hub.subscribe([self.channel], self)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise RedisUnavailable(self.socket.hub.url, error) from None
        if self._stopped:  # the socket closed while the subscription was on its way: take it back
            await self.stop()
            return
        # A revocation published between the socket's token lookup and this subscription reached no one: ask once.
        await self._check()

    async def stop(self) -> None:
        self._stopped = True
        if self._expiry is not None:
            self._expiry.cancel()
        with contextlib.suppress(TimeoutError, redis.RedisError, OSError):
            await self.socket.hub.unsubscribe([self.channel], self)

    def _arm(self) -> None:
        """Close at the token's expiry (a far one is looked at again every MAX_TIMER seconds)."""
        if self.token.expires is None:
            return
        if self.token.expired():
            self.socket.token_gone()
            return
        delay = min(self.token.expires - time.time(), MAX_TIMER)
        self._expiry = asyncio.get_running_loop().call_later(delay, self._arm)

    def message(self, channel: str, payload: dict[str, Any]) -> None:
        revoked = payload.get("revoked")
        if isinstance(revoked, list) and self.token.id in revoked:
            self.socket.token_gone()

    def resync(self) -> None:
        in_background(self._check())

    async def _check(self) -> None:
        hub = self.socket.hub
        with contextlib.suppress(MoiError):  # Redis away again: the next resync, or the next frame, checks
            if not await tokens.still_valid(hub.redis, hub.keys, hub.url, self.token):
                self.socket.token_gone()
