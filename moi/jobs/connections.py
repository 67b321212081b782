"""The process-wide settings, Redis client and contexts, each made on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from . import redis_clients, runtime
from .config import ContextSpec, Settings, build_settings, imported
from .context import Context
from .errors import ConfigError, UnknownContext
from .keys import Keys
from .queue import Limits, Queue
from .store import Store

if TYPE_CHECKING:
    from .dispatch import Dispatcher

_lock = threading.RLock()
_overrides: dict[str, Any] = {}
_settings: Settings | None = None
_store: Store | None = None
_queue: Queue | None = None
_contexts: dict[str, Context] = {}


def configure(**overrides: Any) -> Settings:
    """Override settings (redis_url, contexts, default_context, key_prefix, ttl, ...).

    Takes effect for everything made after the call; earlier connections are dropped.
    """
    global _settings
    with _lock:
        candidate = {**_overrides, **overrides}
        settings = build_settings(candidate)  # validate before changing anything
        _overrides.clear()
        _overrides.update(candidate)
        reset()
        _settings = settings
        return settings


def reset() -> None:
    """Drop the cached settings, Redis client and cluster connections."""
    global _settings, _store, _queue
    from . import dispatch

    with _lock:
        dispatch.stop_all()
        for context in _contexts.values():
            context.reset()
        _contexts.clear()
        if _store is not None:
            _store.redis.close()
        _store = None
        _queue = None
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


def queue() -> Queue:
    global _queue
    with _lock:
        if _queue is None:
            _queue = Queue(store())
        return _queue


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


def limits() -> Limits:
    current = settings()
    return Limits(current.hog_size, current.hard_limit)


def dispatcher(spec: ContextSpec) -> Dispatcher:
    """This process's dispatcher for a context, started on first use."""
    from . import dispatch  # the dispatcher runs jobs' code paths, which use these connections

    return dispatch.ensure(store(), spec, settings().cluster_timeout)


def dispatch_all() -> list[Dispatcher]:
    """A dispatcher for every configured context (``moi server``, ``moi watchdog``)."""
    return [dispatcher(context_spec(name)) for name in context_specs()]


def get_redis() -> redis.Redis[str]:
    return store().redis


def context_specs() -> dict[str, ContextSpec]:
    current = settings()
    if current.contexts:
        return current.contexts
    return {current.default_context: ContextSpec(current.default_context)}


def get_context(ctx: str | Context) -> Context:
    """The Context for a name (or the Context itself); unknown names are an error."""
    if isinstance(ctx, Context):
        return ctx
    with _lock:
        if ctx not in _contexts:
            _contexts[ctx] = Context(context_spec(ctx), settings().cluster_timeout)
        return _contexts[ctx]


def context_spec(name: str) -> ContextSpec:
    """Where the cluster of a context is; UnknownContext for a name that is not configured."""
    specs = context_specs()
    if name not in specs:
        raise UnknownContext(name, list(specs))
    current = settings()
    if current.uses_embedded_cluster:
        return ContextSpec(name, url_file=runtime.ensure(current).url_file)
    return specs[name]
