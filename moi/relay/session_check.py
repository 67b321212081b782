"""A cookie login checked against its server-side session (``moi.storage.sessions``).

``moi server`` turns this on (the application setting ``moi_sessions``): then the signed
cookie ``user`` counts only with a ``moi_session`` cookie whose session is live and is
that user's, so a logout, ``moi user logout`` or ``moi user remove`` ends the login at once.
An application that mounts moi's handlers without that setting keeps the plain signed cookie.
A websocket opened with a session lives no longer than it (``SessionWatch``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import redis
from tornado.web import RequestHandler

from moi.core.errors import MoiError, RedisUnavailable
from moi.relay.closing_tasks import in_background
from moi.relay.hub import Hub
from moi.storage import sessions

SESSIONS_SETTING = "moi_sessions"
SESSION_COOKIE = "moi_session"


async def confirmed(handler: RequestHandler, hub: Hub, user: str | None) -> str | None:
    """``user`` (the cookie's), as its live session has it (with its admin flag); None when the session
    is gone or another user's. MoiError when Redis cannot be read."""
    if not handler.settings.get(SESSIONS_SETTING) or not user:
        return user
    session_id = handler.get_signed_cookie(SESSION_COOKIE)
    if not session_id:
        return None
    found = await sessions.lookup(hub.redis, hub.keys, hub.url, session_id.decode())
    return found if found is not None and found == user else None


class SessionHolder(Protocol):
    """A socket opened with a session cookie, as its watch sees it."""

    @property
    def hub(self) -> Hub: ...

    def session_gone(self) -> None: ...


class SessionWatch:
    """Ends a socket opened with a session cookie when the session ends (heard on ``moi:sessions:ended``,
    from any server). When the hub lost messages, or once subscribed, it asks Redis again."""

    def __init__(self, socket: SessionHolder, session_id: str) -> None:
        self.socket, self.digest = socket, sessions.digest_of(session_id)
        self.channel = socket.hub.keys.sessions_ended

    async def start(self) -> None:
        try:
            await self.socket.hub.subscribe([self.channel], self)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise RedisUnavailable(self.socket.hub.url, error) from None
        await self._check()  # an end published before this subscription reached no one

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError, redis.RedisError, OSError):
            await self.socket.hub.unsubscribe([self.channel], self)

    def message(self, channel: str, payload: dict[str, Any]) -> None:
        ended = payload.get("ended")
        if isinstance(ended, list) and self.digest in ended:
            self.socket.session_gone()

    def resync(self) -> None:
        in_background(self._check())

    async def _check(self) -> None:
        hub = self.socket.hub
        with contextlib.suppress(MoiError):  # Redis away: the next resync checks
            if not await sessions.alive(hub.redis, hub.keys, hub.url, self.digest):
                self.socket.session_gone()
