"""A cookie login checked against its server-side session (``moi.storage.sessions``).

``moi server`` turns this on (the application setting ``moi_sessions``): then the signed
cookie ``user`` counts only with a ``moi_session`` cookie whose session is live and is
that user's, so a logout, ``moi user logout`` or ``moi user remove`` ends the login at once; so does
a request from the trusted proxy (``logins = header``) naming another user than the session's.
An application that mounts moi's handlers without that setting keeps the plain signed cookie.
A websocket opened with a session lives no longer than it (``SessionWatch``): not past its end, nor its expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import redis
from tornado.web import RequestHandler

from moi.core.errors import MoiError, RedisUnavailable
from moi.relay.closing_tasks import in_background
from moi.relay.hub import Hub
from moi.relay.proxy_trust import names_another
from moi.storage import sessions

SESSIONS_SETTING = "moi_sessions"
SESSION_COOKIE = "moi_session"
NO_EXPIRY = -1  # PTTL of a key without one (sessions always have one; kept for a record written by hand)


async def confirmed(handler: RequestHandler, hub: Hub, user: str | None) -> str | None:
    """``user`` (the cookie's), as its live session has it (with its admin flag); None when the session
    is gone or another user's. MoiError when Redis cannot be read."""
    if not handler.settings.get(SESSIONS_SETTING) or not user:
        return user
    session_id = handler.get_signed_cookie(SESSION_COOKIE)
    if not session_id:
        return None
    found = await sessions.lookup(hub.redis, hub.keys, hub.url, session_id.decode())
    if found is None or found != user:
        return None
    if names_another(handler.request, found):  # the proxy's user changed: this login is over
        await sessions.end(hub.redis, hub.keys, hub.url, session_id.decode())
        return None
    return found


class SessionHolder(Protocol):
    """A socket opened with a session cookie, as its watch sees it."""

    @property
    def hub(self) -> Hub: ...

    def session_gone(self) -> None: ...


class SessionWatch:
    """Ends a socket opened with a session cookie when the session ends: heard on ``moi:sessions:ended``
    (from any server), or when it expires (a timer set to its TTL). When the hub lost messages, or
    once subscribed, it asks Redis again. It ends its socket once, and never once stopped."""

    def __init__(self, socket: SessionHolder, session_id: str) -> None:
        self.socket, self.digest = socket, sessions.digest_of(session_id)
        self.channel = socket.hub.keys.sessions_ended
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        try:
            await self.socket.hub.subscribe([self.channel], self)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise RedisUnavailable(self.socket.hub.url, error) from None
        await self._check()  # an end published before this subscription reached no one

    async def stop(self) -> None:
        self._stopped = True
        self._cancel_timer()
        with contextlib.suppress(TimeoutError, redis.RedisError, OSError):
            await self.socket.hub.unsubscribe([self.channel], self)

    def message(self, channel: str, payload: dict[str, Any]) -> None:
        ended = payload.get("ended")
        if isinstance(ended, list) and self.digest in ended:
            self._gone()

    def resync(self) -> None:
        in_background(self._check())

    async def _check(self) -> None:
        """Ends the socket when the session is gone; else sets the timer to the session's expiry."""
        hub = self.socket.hub
        with contextlib.suppress(MoiError):  # Redis away: the next resync checks
            left = await sessions.ms_left(hub.redis, hub.keys, hub.url, self.digest)
            if left <= 0 and left != NO_EXPIRY:
                self._gone()
            elif left > 0 and not self._stopped:
                self._cancel_timer()
                self._timer = asyncio.get_running_loop().call_later(left / 1000 + 0.05, self.resync)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _gone(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._cancel_timer()
        self.socket.session_gone()
