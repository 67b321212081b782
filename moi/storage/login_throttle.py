"""Page logins throttled per (account, address) and per address, with growing waits.

Each scope counts its attempts in a row (forgotten an hour after the last): ``pair:ADDR|NAME``
(one account from one client address) and ``addr:ADDR`` (any names from that address; an IPv6
client counts by its /64, which one host holds whole, and also by its /56, ``net:``, which one
customer of a provider often holds: a host cannot hop across its 256 /64s for fresh attempts). An
attempt is *reserved* before its password is checked, atomically (one Lua script): while a scope's
wait key lives the attempt is refused, its password not even checked; otherwise each scope counts
it, and a scope past its free attempts waits 1 s, 2 s, 4 s ... up to ``MAX_WAIT``. So concurrent
attempts cannot race past the count, and at most the free attempts of a pair are ever checked at
once. A login that succeeds clears its pair and gives its address back the attempt.

There is no scope of a whole account: failures from one address never stop the right password from
another, so nobody can keep an account locked by failing its logins now and then. Guessing one
account's password from many addresses costs each address its own growing waits.
"""

from __future__ import annotations

import ipaddress
import math

import redis.asyncio as aioredis

from moi.core.keys import Keys
from moi.storage.tokens import reading

PAIR_FREE = 3  # attempts at one account from one address before it must wait
ADDRESS_FREE = 20  # attempts from one address (any names) before it must wait
NETWORK_FREE = 60  # attempts from one IPv6 /56 (any names, any of its /64s) before it must wait
MAX_WAIT = 300  # seconds
FORGET_AFTER = 3600  # seconds after the last attempt

# KEYS: failed, wait of each scope; ARGV: each scope's free attempts, then MAX_WAIT, FORGET_AFTER.
# The milliseconds to wait, or 0: reserved (counted in every scope).
RESERVE = """
local longest = 0
for i = 2, #KEYS, 2 do
  local left = redis.call('PTTL', KEYS[i])
  if left > longest then longest = left end
end
if longest > 0 then return longest end
for i = 1, #KEYS, 2 do
  local count = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[#ARGV])
  local free = tonumber(ARGV[(i + 1) / 2])
  if count >= free then
    local wait = math.min(tonumber(ARGV[#ARGV - 1]), 2 ^ math.min(count - free, 16))
    redis.call('SET', KEYS[i + 1], '1', 'EX', math.floor(wait))
  end
end
return 0
"""

# KEYS: the pair's failed, wait; the address's failed, wait. ARGV: the address's free attempts.
SUCCEEDED = """
redis.call('DEL', KEYS[1], KEYS[2])
local count = tonumber(redis.call('GET', KEYS[3]) or '0')
if count > 0 then count = redis.call('DECR', KEYS[3]) end
if count < tonumber(ARGV[1]) then redis.call('DEL', KEYS[4]) end
return count
"""


def address_scope(address: str) -> str:
    """A client address as it is throttled: IPv4 as it is, IPv6 by its /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def scopes(user: str, address: str) -> dict[str, int]:
    """A login's scopes, each with its free attempts."""
    where = address_scope(address)
    free = {f"pair:{where}|{user}": PAIR_FREE, f"addr:{where}": ADDRESS_FREE}
    if where.endswith("/64"):
        free[f"net:{ipaddress.ip_network(where).supernet(new_prefix=56)}"] = NETWORK_FREE
    return free


def _keys(keys: Keys, scope_names: list[str]) -> list[str]:
    return [name for scope in scope_names for name in (keys.login_failed(scope), keys.login_wait(scope))]


async def reserve(client: aioredis.Redis[str], keys: Keys, url: str, free: dict[str, int]) -> int:
    """Whole seconds to wait before a login in these scopes may be tried (nothing counted); 0: this
    attempt is counted in each scope, and may be checked now."""
    args = [*free.values(), MAX_WAIT, FORGET_AFTER]
    with reading(url):
        left = await client.eval(RESERVE, len(free) * 2, *_keys(keys, list(free)), *args)  # type: ignore[no-untyped-call]
    return math.ceil(int(left) / 1000)


async def succeeded(client: aioredis.Redis[str], keys: Keys, url: str, free: dict[str, int]) -> None:
    """The reserved attempt logged in: its pair starts afresh, and its address has the attempt back."""
    pair, address, *_ = list(free)  # a /56 keeps its count: it gives nothing back
    with reading(url):
        await client.eval(SUCCEEDED, 4, *_keys(keys, [pair, address]), free[address])  # type: ignore[no-untyped-call]
