"""OpenID logins under way: each one's secrets kept on the server until its callback takes them, once.

``GET /login/oidc`` keeps a record (the nonce, the PKCE code verifier, the redirect URI, the page
to go to) under the SHA-256 of a random ``state``, for ``STATE_SECONDS``; the provider sends the
browser back with that state, and the callback takes the record and deletes it in one
transaction: a state replayed, forged or expired finds nothing. Anyone may start a login, so how
many start in a minute is capped (``STARTS_PER_MINUTE``, server-wide): a flood cannot fill Redis.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis.asyncio as aioredis

from moi.core.keys import Keys
from moi.storage.tokens import reading

STATE_SECONDS = 600  # how long a login may stay at the provider
STARTS_PER_MINUTE = 600  # logins started per minute, at most: at most ~6,000 records pending at once
MAX_STATE = 200  # characters of a state the callback looks up (ours are 43)


def digest_of(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def keep(client: aioredis.Redis[str], keys: Keys, url: str, state: str, record: dict[str, Any]) -> bool:
    """Keep ``record`` under ``state``; False (nothing kept) when too many logins started this minute."""
    minute = int(time.time() // 60)
    counter = keys.oidc_started(minute)
    pipe = client.pipeline(transaction=True)
    pipe.incr(counter)
    pipe.expire(counter, 120)
    with reading(url):
        started, _ = await pipe.execute()
        if int(started) > STARTS_PER_MINUTE:
            return False
        await client.set(keys.oidc_state(digest_of(state)), json.dumps(record), ex=STATE_SECONDS)
    return True


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
