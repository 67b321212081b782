"""What holds back a flood of anonymous users (``moi.web.anonymous``): counts kept in Redis, read on the event loop.

- submissions per client address (an IPv6 one by its /64) in a sliding hour (this clock hour's count, and
  the last one's weighted by how much of it is within the hour: no double burst around the hour's turn),
  ``[anonymous] max_per_hour_per_address``;
- links mailed to one address per day (``MAILS_PER_DAY``): no one makes moi mail a stranger over and over.
"""

from __future__ import annotations

import hashlib
import time

import redis

from moi.core.errors import RedisUnavailable
from moi.relay.hub import Hub
from moi.services import anonymous
from moi.web.api_handler import Problem, problem_of

MAILS_PER_DAY = 10  # links mailed to one address in a day, from every anonymous submission together
_DAY = 86400


class RateLimited(Problem):
    """A 429 with the seconds until the count starts again (the handler's Retry-After)."""

    def __init__(self, text: str, retry_after: int) -> None:
        super().__init__(429, "rate_limited", text)
        self.retry_after = retry_after


async def _counted(hub: Hub, key: str, lifetime: int) -> int:
    """``key``'s count, one more than before; it lives ``lifetime`` seconds (its name holds its hour or day)."""
    try:
        async with hub.redis.pipeline(transaction=False) as pipe:
            count, _ = await pipe.incr(key).expire(key, lifetime).execute()
    except (redis.RedisError, OSError) as error:
        raise problem_of(RedisUnavailable(hub.url, error)) from None
    return int(count)


async def _read(hub: Hub, key: str) -> int:
    try:
        return int(await hub.redis.get(key) or 0)
    except (redis.RedisError, OSError) as error:
        raise problem_of(RedisUnavailable(hub.url, error)) from None


async def count_address(hub: Hub, address: str, per_hour: int) -> None:
    """Count a submission against its address's hour; a 429 past ``per_hour`` (0: no count)."""
    if per_hour <= 0:
        return
    now = time.time()
    count = await _counted(hub, anonymous.rate_key(hub.keys, address, now), anonymous.RATE_WINDOW)
    if count <= per_hour:  # a sliding hour: the last clock hour's count, as much of it as is within the hour
        earlier = await _read(hub, anonymous.rate_key(hub.keys, address, now - anonymous.RATE_HOUR))
        count += int(earlier * (1 - (now % anonymous.RATE_HOUR) / anonymous.RATE_HOUR))
    if count > per_hour:
        text = f"at most {per_hour} anonymous jobs an hour from one address; try later"
        raise RateLimited(text, anonymous.RATE_HOUR - int(now) % anonymous.RATE_HOUR)  # until the next hour's count


async def count_mail(hub: Hub, email: str | None) -> None:
    """Count a link to be mailed to ``email`` (kept by its hash only); a 429 past ``MAILS_PER_DAY``."""
    if not email:
        return
    digest = hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()
    day = int(time.time()) // _DAY
    if await _counted(hub, hub.keys.anonymous_mailed(digest, day), _DAY + 60) > MAILS_PER_DAY:
        text = f"at most {MAILS_PER_DAY} links a day are mailed to one address; try later"
        raise RateLimited(text, _DAY - int(time.time()) % _DAY)
