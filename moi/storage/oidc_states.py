"""OpenID logins under way: each one's secrets kept on the server until its callback takes them, once.

``GET /login/oidc`` keeps a record (the nonce, the PKCE code verifier, the redirect URI, the page
to go to) under the SHA-256 of a random ``state``, for ``STATE_SECONDS``; the provider sends the
browser back with that state, and the callback takes the record and deletes it in one
transaction: a state replayed, forged or expired finds nothing. Anyone may start a login, so how
many start in a minute is capped per client address (``STARTS_PER_ADDRESS``; IPv6 by its /64) and
server-wide (``STARTS_PER_MINUTE``, far above): a flood cannot fill Redis, and a refused start counts
only against its address, so one client cannot shut the logins off for everyone.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis.asyncio as aioredis

from moi.core.keys import Keys
from moi.storage.login_throttle import address_scope
from moi.storage.tokens import reading

STATE_SECONDS = 600  # how long a login may stay at the provider
STARTS_PER_ADDRESS = 20  # logins one client address may start per minute
STARTS_PER_MINUTE = 10_000  # everyone's per minute, at most: at most ~100,000 small records pending
# KEYS: the address's counter, everyone's counter, the state's record; ARGV: the caps, the record, its life.
KEEP = """
local mine = redis.call('INCR', KEYS[1])
if mine == 1 then redis.call('EXPIRE', KEYS[1], 120) end
if mine > tonumber(ARGV[1]) then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 0 end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], 120) end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4])
return 1
"""
MAX_STATE = 200  # characters of a state the callback looks up (ours are 43)


def digest_of(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def keep(  # noqa: PLR0913
    client: aioredis.Redis[str], keys: Keys, url: str, state: str, record: dict[str, Any], address: str
) -> bool:
    """Keep ``record`` under ``state``; False (nothing kept) when ``address``, or everyone, started too
    many logins this minute."""
    minute = int(time.time() // 60)
    names = [keys.oidc_started_by(address_scope(address), minute), keys.oidc_started(minute)]
    args = [STARTS_PER_ADDRESS, STARTS_PER_MINUTE, json.dumps(record), STATE_SECONDS]
    with reading(url):
        kept = await client.eval(KEEP, 3, *names, keys.oidc_state(digest_of(state)), *args)  # type: ignore[no-untyped-call]
    return bool(kept)


async def take(client: aioredis.Redis[str], keys: Keys, url: str, state: str) -> dict[str, Any] | None:
    """The record kept under ``state``, deleted as it is read; None for a state unknown, used or expired."""
    if not state or len(state) > MAX_STATE:
        return None
    key = keys.oidc_state(digest_of(state))
    pipe = client.pipeline(transaction=True)  # read and delete at once: two callbacks cannot both take it
    pipe.get(key)
    pipe.delete(key)
    with reading(url):
        text, _ = await pipe.execute()
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
