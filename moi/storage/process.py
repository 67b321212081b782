"""This process's settings and Redis store, each made on first use.

The layers below the process's wiring read what they need here: the settings, the store, and
where each context's cluster is. What is made from them higher up (contexts, dispatchers, the
queue) is ``moi.jobs.connections``, which also changes the settings (``configure``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from moi.core.config import ContextSpec, Settings, build_settings, imported
from moi.core.errors import ConfigError, UnknownContext
from moi.core.keys import Keys
from moi.storage import redis_clients, runtime
from moi.storage.store import Store

_lock = threading.RLock()
_overrides: dict[str, Any] = {}
_settings: Settings | None = None
_store: Store | None = None


def replace_overrides(overrides: dict[str, Any], settings: Settings) -> None:
    """Take ``overrides`` (already built into ``settings``) in place of the earlier ones."""
    global _settings
    with _lock:
        _overrides.clear()
        _overrides.update(overrides)
        drop()
        _settings = settings


def overrides() -> dict[str, Any]:
    with _lock:
        return dict(_overrides)


def drop() -> None:
    """Forget the settings and close the store: both are made again on next use."""
    global _settings, _store
    with _lock:
        if _store is not None:
            _store.redis.close()
        _store = None
        _settings = None


def settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = build_settings(_overrides)
        return _settings


def redis_url() -> str:
    current = settings()
    if current.redis_url is not None:
        return current.redis_url
    return runtime.ensure(current).redis_url


def store() -> Store:
    global _store
    with _lock:
        if _store is None:
            _store = _store_at(redis_url())
        return _store


def running_store() -> Store | None:
    """The store, without starting anything: None when it is the embedded runtime's and that is not
    running (``moi status`` reports; it never starts the runtime)."""
    global _store
    with _lock:
        current = settings()
        if _store is None and current.redis_url is None:
            started = runtime.read(Path(current.state_dir))
            if started is None:
                return None
            _store = _store_at(started.redis_url)
        return store()


def _store_at(url: str) -> Store:
    current = settings()
    client = redis_clients.sync_client(url, decode_responses=True, socket_connect_timeout=5)
    return Store(client, Keys(current.key_prefix), current.ttl, url)


def get_redis() -> redis.Redis[str]:
    return store().redis


def chooser() -> Callable[..., str] | None:
    """The configured chooser (``[moi] chooser = pkg.mod:func``), imported on first use; None if none."""
    path = settings().chooser
    if not path:
        return None
    try:
        found = imported(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"chooser {path!r} cannot be imported ({error}); write it as package.module:function"
        ) from None
    if not callable(found):
        raise ConfigError(f"chooser {path!r} is not a function")
    chosen: Callable[..., str] = found
    return chosen


def context_specs() -> dict[str, ContextSpec]:
    """Every configured context: the clusters' (or the embedded one), then the scheduler contexts."""
    current = settings()
    specs = dict(current.contexts) or {current.default_context: ContextSpec(current.default_context)}
    for name, scheduler in current.schedulers.items():
        specs[name] = ContextSpec(name, scheduler=scheduler)
    return specs


def context_spec(name: str) -> ContextSpec:
    """Where the cluster of a context is; UnknownContext for a name that is not configured."""
    specs = context_specs()
    if name not in specs:
        raise UnknownContext(name, list(specs))
    current = settings()
    if current.uses_embedded_cluster and specs[name].scheduler is None:
        return ContextSpec(name, url_file=runtime.ensure(current).url_file)
    return specs[name]
