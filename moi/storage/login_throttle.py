"""Failed page logins, throttled per account and per client address with growing waits.

Each scope (``user:NAME``, ``addr:IP``) counts its failed logins in a row (forgotten an
hour after the last). Past its free failures, each further failure makes the scope wait
1 s, 2 s, 4 s ... up to ``MAX_WAIT``: while the wait key lives, a login in that scope is
refused without its password being checked. A login that succeeds clears its account's count.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from moi.core.keys import Keys
from moi.storage.tokens import reading

ACCOUNT_FREE = 3  # failures of one account before it must wait
ADDRESS_FREE = 20  # failures from one address (any names) before it must wait
MAX_WAIT = 300  # seconds
FORGET_AFTER = 3600  # seconds after the last failure


def scopes(user: str, address: str) -> dict[str, int]:
    """A login's scopes, each with its free failures."""
    return {f"user:{user}": ACCOUNT_FREE, f"addr:{address}": ADDRESS_FREE}


async def wait_left(client: aioredis.Redis[str], keys: Keys, url: str, scope_names: list[str]) -> int:
    """Whole seconds until a login in these scopes may be tried again; 0: now."""
    pipe = client.pipeline(transaction=False)
    for scope in scope_names:
        pipe.pttl(keys.login_wait(scope))
    with reading(url):
        left = await pipe.execute()
    return math.ceil(max([0, *(int(ms) for ms in left)]) / 1000)


async def failed(client: aioredis.Redis[str], keys: Keys, url: str, free: dict[str, int]) -> None:
    """Count a failed login in each scope, and make those past their free failures wait."""
    for scope, allowed in free.items():
        with reading(url):
            count = int(await client.incr(keys.login_failed(scope)))
            await client.expire(keys.login_failed(scope), FORGET_AFTER)
            if count >= allowed:
                wait = min(MAX_WAIT, 2 ** min(count - allowed, 16))
                await client.set(keys.login_wait(scope), "1", ex=wait)


async def succeeded(client: aioredis.Redis[str], keys: Keys, url: str, user: str) -> None:
    with reading(url):
        await client.delete(keys.login_failed(f"user:{user}"), keys.login_wait(f"user:{user}"))
