"""API tokens: ``Authorization: Bearer <token>`` for scripts and pages that do not use the cookie.

A token reads ``moi_<id>_<secret>``. moi keeps only the SHA-256 of the secret,
with the user it stands for, whether it is an admin's, a name, when it was
made and when it expires (``moi:tokens``, a hash by id), so a copy of Redis reveals
no token. The secret is shown once, when it is made; ``revoke`` forgets it and
announces it (``moi:tokens:revoked``), so every server closes the token's open
sockets. An expired token is refused like a revoked one. When each token was last
used is kept beside (``moi:tokens:used``), written at most once a minute per token
and process, so a busy script costs no write per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from moi.core.errors import InvalidExpiry, InvalidUserName, RedisRefused, RedisUnavailable, UnknownToken
from moi.core.info import now
from moi.core.keys import Keys, user_name_problem
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

_TOKEN = re.compile(r"^moi_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
# Seconds between two writes of one token's last use by one process.
USED_EVERY = 60.0
_used_written: dict[str, float] = {}  # token id -> when this process last wrote its use (monotonic)


@dataclass(frozen=True)
class Token:
    """What a token stands for; never the secret itself."""

    id: str
    user: str
    admin: bool
    name: str
    created: str
    expires: float | None = None  # epoch seconds; None: never
    last_used: float | None = None  # epoch seconds, as ``listed`` reads it; None: never used
    code: bool = False  # its user may run code over the web (``moi token create --code``; see moi.compute.sandbox)

    def expired(self) -> bool:
        return self.expires is not None and time.time() >= self.expires


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    store: Store, user: str, admin: bool = False, name: str = "", expires_in: float | None = None, code: bool = False
) -> str:
    """A new token for ``user``, valid for ``expires_in`` seconds (None: until revoked); the only time its
    secret is seen. ``code``: it may run code over the web (see ``moi.compute.sandbox``)."""
    problem = user_name_problem(user)
    if problem is not None:
        raise InvalidUserName(user, problem)
    if expires_in is not None and not 0 < expires_in < 1e10:
        raise InvalidExpiry(expires_in)
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    kept = {"user": user, "admin": admin, "code": code, "name": name, "created": now(), "sha256": _digest(secret)}
    kept["expires"] = None if expires_in is None else round(time.time() + expires_in, 3)
    with reaching(store.url):
        store.redis.hset(store.keys.tokens, token_id, json.dumps(kept))
    return f"moi_{token_id}_{secret}"


def listed(store: Store) -> list[Token]:
    """Every token, oldest first, with when each was last used."""
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(store.keys.tokens)
    pipe.hgetall(store.keys.tokens_used)
    with reaching(store.url):
        kept, used = pipe.execute()
    found = [_token(token_id, text, used.get(token_id)) for token_id, text in kept.items()]
    return sorted((token for token in found if token is not None), key=lambda token: token.created)


def revoke(store: Store, token_id: str) -> None:
    """Forget a token (by its id, or the token itself); UnknownToken when there is none.

    Announced on ``moi:tokens:revoked``: every server's sockets opened with it close.
    """
    match = _TOKEN.match(token_id)
    key = match.group(1) if match else token_id
    pipe = store.redis.pipeline(transaction=True)
    pipe.hdel(store.keys.tokens, key)
    pipe.hdel(store.keys.tokens_used, key)
    pipe.publish(store.keys.tokens_revoked, json.dumps({"revoked": [key]}))
    with reaching(store.url):
        removed, _, _ = pipe.execute()
    if not removed:
        raise UnknownToken(token_id)


def revoke_of(store: Store, user: str, admin_only: bool = False) -> int:
    """Forget every token of ``user`` (``admin_only``: those made with ``--admin``), announced as ``revoke`` does;
    how many. Ending a user's logins, or taking their admin flag, goes through here."""
    doomed = [token.id for token in listed(store) if token.user == user and (token.admin or not admin_only)]
    if not doomed:
        return 0
    pipe = store.redis.pipeline(transaction=True)
    pipe.hdel(store.keys.tokens, *doomed)
    pipe.hdel(store.keys.tokens_used, *doomed)
    pipe.publish(store.keys.tokens_revoked, json.dumps({"revoked": doomed}))
    with reaching(store.url):
        removed, _, _ = pipe.execute()
    return int(removed)


async def lookup(client: aioredis.Redis[str], keys: Keys, url: str, token: str) -> Token | None:
    """What ``token`` stands for, or None for a token that is malformed, unknown, revoked, expired or wrong.

    Notes its use (see ``USED_EVERY``).
    """
    match = _TOKEN.match(token)
    if match is None:
        return None
    token_id, secret = match.groups()
    with reading(url):
        text = await client.hget(keys.tokens, token_id)
        found = _token(token_id, text) if text is not None else None
        if found is None or found.expired() or not hmac.compare_digest(_kept_digest(text), _digest(secret)):
            return None
        if time.monotonic() - _used_written.get(token_id, -USED_EVERY) >= USED_EVERY:
            _used_written[token_id] = time.monotonic()
            await client.hset(keys.tokens_used, token_id, str(round(time.time())))
    return found


async def still_valid(client: aioredis.Redis[str], keys: Keys, url: str, token: Token) -> bool:
    """Whether a token looked up earlier is neither revoked nor expired now (one HEXISTS)."""
    if token.expired():
        return False
    with reading(url):
        return bool(await client.hexists(keys.tokens, token.id))


@contextlib.contextmanager
def reading(url: str) -> Iterator[None]:
    """Redis's errors as moi's, for the async reads (``reaching`` is the blocking client's)."""
    try:
        yield
    except redis.ResponseError as error:
        raise RedisRefused(url, error) from None
    except (redis.RedisError, OSError) as error:
        raise RedisUnavailable(url, error) from None


def _kept_digest(text: str | None) -> str:
    try:
        return str(json.loads(text or "{}").get("sha256", ""))
    except (ValueError, AttributeError):
        return ""


def _token(token_id: str, text: str, used: str | None = None) -> Token | None:
    """A kept token; None for an entry that is not one (written behind moi's back)."""
    try:
        kept: Any = json.loads(text)
        user = kept["user"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(user, str) or user_name_problem(user) is not None:
        return None
    expires = kept.get("expires")
    if expires is not None and not isinstance(expires, int | float):
        expires = 0.0  # an expiry moi cannot read: expired, never valid for ever
    return Token(
        token_id,
        user,
        kept.get("admin") is True,
        str(kept.get("name") or ""),
        str(kept.get("created")),
        expires=None if expires is None else float(expires),
        last_used=float(used) if used is not None and used.isdigit() else None,
        code=kept.get("code") is True,
    )
