"""A cookie login checked against its server-side session (``moi.storage.sessions``).

``moi server`` turns this on (the application setting ``moi_sessions``): then the signed
cookie ``user`` counts only with a ``moi_session`` cookie whose session is live and is
that user's, so a logout, ``moi user logout`` or ``moi user remove`` ends the login at once.
An application that mounts moi's handlers without that setting keeps the plain signed cookie.
"""

from __future__ import annotations

from tornado.web import RequestHandler

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
