"""Redis clients from moi's Redis URLs: every client moi makes is made here.

- ``redis://[:password@]host:port/db``: a Redis server.
- ``rediss://...``: the same over TLS; redis-py reads ``?ssl_ca_certs=/path/ca.pem`` (and
  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``) from the query.
- ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``: the master that
  Redis Sentinel names for ``service``, found again after a failover (redis-py's Sentinel
  support). The password is the master's and its replicas'; ``?sentinel_password=`` is
  the sentinels' own, if they ask for one. ``rediss+sentinel://`` speaks TLS to all of
  them, with the same ``ssl_*`` options.

A URL is all an engine receives of moi's configuration, so it must say everything needed
to reach Redis, sentinels included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.connection import URL_QUERY_ARGUMENT_PARSERS
from redis.sentinel import Sentinel

from moi.core.errors import ConfigError
from moi.core.values import is_whole

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme: whether it speaks TLS
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the sentinels to ask, and the service's master to use."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    master_options: dict[str, Any] = field(default_factory=dict)  # password, TLS: for the master
    sentinel_options: dict[str, Any] = field(default_factory=dict)  # the same, for the sentinels


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0] in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service, db and options a sentinel URL names; ConfigError saying what is wrong."""
    scheme, _, rest = url.partition("://")
    if scheme not in SENTINEL_SCHEMES:
        raise ConfigError(f"not a sentinel URL (redis+sentinel://host:port,.../service): {scheme}://")
    parts = urlsplit(f"redis://{rest}")  # one host for urlsplit; the sentinels are read from the netloc below
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = [_sentinel_address(entry) for entry in hosts.split(",") if entry.strip()]
    path = [piece for piece in parts.path.split("/") if piece]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not is_whole(path[1], 5)):
        raise ConfigError(
            "a sentinel URL names its sentinels and service: redis+sentinel://[:password@]host:port[,host:port]/service[/db]"
        )
    master: dict[str, Any] = {}
    username, _, password = userinfo.partition(":")
    if username:
        master["username"] = unquote(username)
    if password:
        master["password"] = unquote(password)
    sentinel: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query):
        if name == "sentinel_password":
            sentinel["password"] = value
        elif name.startswith("ssl_"):
            master[name] = sentinel[name] = value
        else:  # typed as redis-py types them in its own URLs
            parse = URL_QUERY_ARGUMENT_PARSERS.get(name)
            master[name] = parse(value) if parse else value
    if SENTINEL_SCHEMES[scheme]:
        master["ssl"] = sentinel["ssl"] = True
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, master, sentinel)


def _sentinel_address(entry: str) -> tuple[str, int]:
    host, _, port = entry.strip().rpartition(":")
    if not host:
        return entry.strip(), DEFAULT_SENTINEL_PORT
    if not is_whole(port, 5):
        raise ConfigError(f"a sentinel's port is a number: {entry.strip()!r}")
    return host.strip("[]"), int(port)


def check_url(url: str) -> str:
    """``url``, if moi can make a client of it; else ConfigError saying what to write."""
    scheme, _, rest = url.partition("://")
    if scheme not in PLAIN_SCHEMES and scheme not in SENTINEL_SCHEMES:
        what = f"{scheme}://" if rest else "a bare address"  # never the rest: it may hold the password
        raise ConfigError(
            f"a Redis URL starts redis://, rediss:// (TLS) or redis+sentinel://, not {what}; "
            "set MOI_REDIS_URL or [redis] url"
        )
    if scheme in PLAIN_SCHEMES:
        try:
            urlsplit(url).port  # noqa: B018 (urllib checks the port when it is read: ValueError, a traceback)
        except ValueError:
            raise ConfigError("the Redis URL's port is not a number from 0 to 65535") from None
    tls = scheme == "rediss" or SENTINEL_SCHEMES.get(scheme, False)
    if not tls and any(name.startswith("ssl_") for name, _ in parse_qsl(urlsplit(f"x://{rest}").query)):
        raise ConfigError(
            f"ssl_* options need TLS: write {scheme.replace('redis', 'rediss', 1)}:// instead of {scheme}://"
        )
    return url


def sync_client(url: str, **options: Any) -> redis.Redis[Any]:
    """A client of the Redis ``url`` names (its master, for a sentinel URL); ``options`` as redis-py's."""
    client: redis.Redis[Any] = _client(url, options, redis.Redis, Sentinel)
    return client


def async_client(url: str, **options: Any) -> aioredis.Redis[Any]:
    """An asyncio client of the Redis ``url`` names; ``options`` as redis-py's."""
    client: aioredis.Redis[Any] = _client(url, options, aioredis.Redis, AsyncSentinel)
    return client


def _client(url: str, options: dict[str, Any], redis_class: Any, sentinel_class: Any) -> Any:
    check_url(url)
    if not is_sentinel_url(url):
        return redis_class.from_url(url, **options)
    target, manager = _sentinels(url, sentinel_class, options)
    return manager.master_for(target.service, redis_class=redis_class, db=target.db, **target.master_options, **options)


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):  # type: ignore[type-arg]
    """Connections to the master a sentinel names, at most ``max_connections``, callers waiting for a free one."""


def async_blocking_pool(url: str, max_connections: int, timeout: float, **options: Any) -> Any:
    """A pool of at most ``max_connections`` asyncio connections; a caller waits ``timeout`` s for one."""
    check_url(url)
    if not is_sentinel_url(url):
        return aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, **options
        )
    target, manager = _sentinels(url, AsyncSentinel, options)
    limits: dict[str, Any] = {"max_connections": max_connections, "timeout": timeout}  # BlockingConnectionPool's
    return _BlockingSentinelPool(target.service, manager, db=target.db, **limits, **target.master_options, **options)


def _sentinels(url: str, sentinel_class: Any, options: dict[str, Any]) -> tuple[SentinelTarget, Any]:
    """What the sentinel URL names, and a ``sentinel_class`` (sync or asyncio) that asks its sentinels."""
    target = parse_sentinel_url(url)
    return target, sentinel_class(target.sentinels, sentinel_kwargs={**target.sentinel_options, **_timeouts(options)})


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    """The socket timeouts of ``options``, which the sentinels' connections share with the master's."""
    return {name: value for name, value in options.items() if name.startswith("socket_") and "timeout" in name}
