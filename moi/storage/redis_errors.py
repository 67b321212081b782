"""Redis failing, as moi's errors: a lost connection, or a command Redis refused.

Every Redis call moi makes runs inside ``reaching``, so a user sees one line that names the
URL and what went wrong, never redis-py's traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from moi.core.errors import RedisRefused, RedisUnavailable


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn a lost Redis connection into a one-line RedisUnavailable, a refused command into RedisRefused.

    A refusal (WRONGTYPE, a script error, a read-only replica) is Redis answering: calling it
    unreachable would send the user looking for an outage that is not there.
    """
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RedisUnavailable(url, _first_line(error)) from error
    except redis.ResponseError as error:
        raise RedisRefused(url, _first_line(error)) from error


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
