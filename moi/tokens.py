"""API tokens: ``Authorization: Bearer <token>`` for scripts and pages that do not use the cookie.

A token reads ``moi_<id>_<secret>``. moi keeps only the SHA-256 of the secret,
with the user it stands for, whether it is an admin's, a name and when it was
made (``moi:tokens``, a hash by id), so a copy of Redis reveals no token. The
secret is shown once, when it is made; ``revoke`` forgets it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from .errors import InvalidUserName, RedisRefused, RedisUnavailable, UnknownToken
from .info import now
from .keys import Keys, user_name_problem
from .store import Store, reaching

_TOKEN = re.compile(r"^moi_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class Token:
    """What a token stands for; never the secret itself."""

    id: str
    user: str
    admin: bool
    name: str
    created: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(store: Store, user: str, admin: bool = False, name: str = "") -> str:
    """A new token for ``user``; the only time its secret is seen."""
    problem = user_name_problem(user)
    if problem is not None:
        raise InvalidUserName(user, problem)
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    kept = {"user": user, "admin": admin, "name": name, "created": now(), "sha256": _digest(secret)}
    with reaching(store.url):
        store.redis.hset(store.keys.tokens, token_id, json.dumps(kept))
    return f"moi_{token_id}_{secret}"


def listed(store: Store) -> list[Token]:
    with reaching(store.url):
        kept = store.redis.hgetall(store.keys.tokens)
    found = [_token(token_id, text) for token_id, text in kept.items()]
    return sorted((token for token in found if token is not None), key=lambda token: token.created)


def revoke(store: Store, token_id: str) -> None:
    """Forget a token (by its id, or the token itself); UnknownToken when there is none."""
    match = _TOKEN.match(token_id)
    key = match.group(1) if match else token_id
    with reaching(store.url):
        removed = store.redis.hdel(store.keys.tokens, key)
    if not removed:
        raise UnknownToken(token_id)


async def lookup(client: aioredis.Redis[str], keys: Keys, url: str, token: str) -> Token | None:
    """What ``token`` stands for, or None for a token that is malformed, unknown, revoked or wrong."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    token_id, secret = match.groups()
    try:
        text = await client.hget(keys.tokens, token_id)
    except redis.ResponseError as error:
        raise RedisRefused(url, error) from None
    except (redis.RedisError, OSError) as error:
        raise RedisUnavailable(url, error) from None
    found = _token(token_id, text) if text is not None else None
    if found is None or not hmac.compare_digest(_kept_digest(text), _digest(secret)):
        return None
    return found


def _kept_digest(text: str | None) -> str:
    try:
        return str(json.loads(text or "{}").get("sha256", ""))
    except (ValueError, AttributeError):
        return ""


def _token(token_id: str, text: str) -> Token | None:
    """A kept token; None for an entry that is not one (written behind moi's back)."""
    try:
        kept: Any = json.loads(text)
        user = kept["user"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(user, str) or user_name_problem(user) is not None:
        return None
    return Token(token_id, user, kept.get("admin") is True, str(kept.get("name") or ""), str(kept.get("created")))
