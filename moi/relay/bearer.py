"""``Authorization: Bearer <token>`` on moi's routes: the websocket and a job's files (see ``moi.storage.tokens``).

A request that carries the header is that token's user, whatever its cookie
says; a malformed, unknown, revoked or expired token is refused with 401 and never
falls back to the cookie. A token made with ``--admin`` may read every user's jobs' files.
"""

from __future__ import annotations

import logging

from tornado.web import HTTPError, RequestHandler

from moi.core.redact import printable
from moi.jobs import connections
from moi.relay.hub import Hub
from moi.storage import tokens

log = logging.getLogger("moi.bearer")


async def authenticate(handler: RequestHandler, hub: Hub) -> bool:
    """Set the handler's user from its Bearer token, if it has one; whether that user is an admin:
    the token's flag, or for a login without a token, the name in ``[moi] admins``."""
    found = await token_of(handler, hub)
    if found is None:
        return is_admin_login(handler.current_user)
    handler.current_user = found.user
    return found.admin


async def token_of(handler: RequestHandler, hub: Hub) -> tokens.Token | None:
    """The request's Bearer token; None without an Authorization header, 401 for a bad one."""
    header = handler.request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPError(401, "the Authorization header is not 'Bearer <token>'")
    found = await tokens.lookup(hub.redis, hub.keys, hub.url, token.strip())
    if found is None:
        log.info("refused a bad, revoked or expired token from %s", printable(handler.request.remote_ip))
        raise HTTPError(401, "bad, revoked or expired token")
    return found


def is_admin_login(user: object) -> bool:
    """Whether a user logged in by the page's login (cookie) is one of ``[moi] admins``, or has an
    admin account (``moi user add --admin``: its session carries the flag). An OpenID login's session
    is an admin only by its flag (the provider's admin group): ``[moi] admins`` names none."""
    if not user:
        return False
    if getattr(user, "admin", False) is True:
        return True
    return getattr(user, "named_admin", True) is not False and str(user) in connections.settings().admin_names
