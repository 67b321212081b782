"""Page logins of ``moi server``, revocable on the server's side.

A login makes a session: a random id, sent in the signed cookie ``moi_session``, and a
record kept under the SHA-256 of that id (so a copy of Redis holds no live cookie) that
expires with the login (``[server] session_hours``). Logging out deletes the record;
``moi user logout`` and ``moi user remove`` (and an admin on ``/ops``) delete every session of a user (their ids are
in ``moi:sessions:<user>``, at most ``MAX_PER_USER``). A cookie whose record is gone is no login. Each end is announced
on ``moi:sessions:ended``: every server closes the websockets opened with those sessions.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import redis.asyncio as aioredis

from moi.core.info import now
from moi.core.keys import Keys
from moi.storage import tokens
from moi.storage.redis_errors import reaching
from moi.storage.store import Store
from moi.storage.tokens import reading

MAX_PER_USER = 50  # live sessions of one user; a new one past this ends the oldest

# KEYS: the new session, the user's sessions (a sorted set by expiry, in ms). ARGV: the record, its
# seconds, its digest, now in ms, MAX_PER_USER, the sessions' key prefix. The set's own expiry only
# grows (the newest session is the last to expire). Returns the digests of the sessions it ended.
START = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local expires = tonumber(ARGV[4]) + tonumber(ARGV[2]) * 1000
redis.call('ZADD', KEYS[2], expires, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
local dropped = {}
if over > 0 then
  dropped = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, digest in ipairs(dropped) do
    redis.call('DEL', ARGV[6] .. digest)
    redis.call('ZREM', KEYS[2], digest)
  end
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) * 1000 then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 1000)
end
return dropped
"""


class LoginUser(str):
    """A logged-in user's name, carrying whether their account makes them an admin, and whether
    ``[moi] admins`` may (not for an OpenID login: the provider's names are not this site's)."""

    admin: bool = False
    named_admin: bool = True

    @classmethod
    def of(cls, name: str, admin: bool, named_admin: bool = True) -> LoginUser:
        user = cls(name)
        user.admin = admin
        user.named_admin = named_admin
        return user


def digest_of(session_id: str) -> str:
    """The name a session's record is kept and announced under."""
    return hashlib.sha256(session_id.encode()).hexdigest()


async def start(  # noqa: PLR0913
    client: aioredis.Redis[str], keys: Keys, url: str, user: str, admin: bool, seconds: int, method: str = ""
) -> str:
    """A new session of ``user`` lasting ``seconds``; its id, for the cookie. Past ``MAX_PER_USER`` live
    sessions the oldest end (their sockets told), so one user cannot pile up sessions without end.
    ``method`` "oidc": ``[moi] admins`` does not apply to it (only ``admin``, from the provider's group)."""
    session_id = secrets.token_urlsafe(32)
    digest = digest_of(session_id)
    record = json.dumps({"user": user, "admin": admin, "created": now(), "method": method})
    now_ms = int(time.time() * 1000)
    with reading(url):
        args = [record, seconds, digest, now_ms, MAX_PER_USER, keys.session("")]
        dropped = await client.eval(START, 2, keys.session(digest), keys.user_sessions(user), *args)  # type: ignore[no-untyped-call]
        if dropped:
            await client.publish(keys.sessions_ended, json.dumps({"ended": list(dropped)}))
    return session_id


async def reuse(client: aioredis.Redis[str], keys: Keys, url: str, session_id: str, user: str) -> bool:
    """Whether ``session_id`` is a live session of ``user`` (a proxy's login keeps it instead of making one)."""
    found = await lookup(client, keys, url, session_id)
    return found is not None and found == user


async def ms_left(client: aioredis.Redis[str], keys: Keys, url: str, digest: str) -> int:
    """Milliseconds until the session kept under ``digest`` expires; 0 or less when it is gone."""
    with reading(url):
        return int(await client.pttl(keys.session(digest)))


async def lookup(client: aioredis.Redis[str], keys: Keys, url: str, session_id: str) -> LoginUser | None:
    """The user of a live session; None for one ended, expired or never made."""
    with reading(url):
        text = await client.get(keys.session(digest_of(session_id)))
    kept = _record(text)
    user = kept.get("user")
    if not isinstance(user, str):
        return None
    return LoginUser.of(user, kept.get("admin") is True, named_admin=kept.get("method") != "oidc")


async def alive(client: aioredis.Redis[str], keys: Keys, url: str, digest: str) -> bool:
    """Whether the session kept under ``digest`` is still live."""
    with reading(url):
        return bool(await client.exists(keys.session(digest)))


async def end(client: aioredis.Redis[str], keys: Keys, url: str, session_id: str) -> None:
    """End one session (a logout)."""
    digest = digest_of(session_id)
    with reading(url):
        kept = _record(await client.get(keys.session(digest)))
        await client.delete(keys.session(digest))
        if isinstance(kept.get("user"), str):
            await client.zrem(keys.user_sessions(kept["user"]), digest)
        await client.publish(keys.sessions_ended, json.dumps({"ended": [digest]}))


def end_all(store: Store, user: str) -> int:
    """End every session of ``user``; how many were live."""
    with reaching(store.url):
        digests = store.redis.zrange(store.keys.user_sessions(user), 0, -1)
        pipe = store.redis.pipeline(transaction=True)
        for digest in digests:
            pipe.delete(store.keys.session(digest))
        pipe.delete(store.keys.user_sessions(user))
        pipe.publish(store.keys.sessions_ended, json.dumps({"ended": sorted(digests)}))
        ended = pipe.execute()
    return sum(int(count) for count in ended[:-2])


def end_everything(store: Store, user: str) -> tuple[int, int]:
    """End every session of ``user`` and revoke every token of theirs, at once (``moi user logout``,
    ``POST /api/v1/users/{name}/logout``): (sessions ended, tokens revoked). Any login name will do,
    with or without a password account (pam, oidc and header users have none)."""
    return end_all(store, user), tokens.revoke_of(store, user)


def live_counts(store: Store, users: list[str]) -> dict[str, int]:
    """How many live sessions each of ``users`` has (those not yet expired)."""
    now_ms = int(time.time() * 1000)
    pipe = store.redis.pipeline(transaction=False)
    for user in users:
        pipe.zcount(store.keys.user_sessions(user), f"({now_ms}", "+inf")
    with reaching(store.url):
        counts = pipe.execute()
    return {user: int(count) for user, count in zip(users, counts, strict=True)}


def _record(text: str | None) -> dict[str, Any]:
    try:
        kept = json.loads(text or "{}")
    except ValueError:
        return {}
    return kept if isinstance(kept, dict) else {}
