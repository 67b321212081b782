"""The wiring of a process: its settings and store (``moi.storage.process``), and what is made
from them here, each on first use: contexts, dispatchers, the queue and its limits.

``configure`` changes the settings for everything made after it; ``reset`` drops it all.
"""

from __future__ import annotations

import threading
from typing import Any

from moi.compute import dispatch
from moi.compute.context import Context
from moi.core.config import ContextSpec, Settings, build_settings
from moi.jobs import remote_files
from moi.queue.jobqueue import Limits, Queue
from moi.storage import process
from moi.storage.process import (  # re-exported: the wiring's callers read them here
    chooser as chooser,
)
from moi.storage.process import (
    context_spec as context_spec,
)
from moi.storage.process import (
    context_specs as context_specs,
)
from moi.storage.process import (
    get_redis as get_redis,
)
from moi.storage.process import (
    redis_url as redis_url,
)
from moi.storage.process import (
    running_store as running_store,
)
from moi.storage.process import (
    settings as settings,
)
from moi.storage.process import (
    store as store,
)

_lock = threading.RLock()
_queue: Queue | None = None
_contexts: dict[str, Context] = {}


def configure(**overrides: Any) -> Settings:
    """Override settings (redis_url, contexts, default_context, key_prefix, ttl, ...).

    Takes effect for everything made after the call; earlier connections are dropped.
    """
    with _lock:
        candidate = {**process.overrides(), **overrides}
        settings = build_settings(candidate)  # validate before changing anything
        _drop_wiring()
        process.replace_overrides(candidate, settings)  # drops the store and settings, then takes these
        return settings


def reset() -> None:
    """Drop the cached settings, Redis client and cluster connections."""
    with _lock:
        _drop_wiring()
        process.drop()


def _drop_wiring() -> None:
    """Stop this process's dispatchers and forget its contexts and queue (made again on next use)."""
    global _queue
    dispatch.stop_all()
    remote_files.close_all()  # the connections to clusters for their jobs' files
    for context in _contexts.values():
        context.reset()
    _contexts.clear()
    _queue = None


def queue() -> Queue:
    global _queue
    with _lock:
        if _queue is None:
            _queue = Queue(store())
        return _queue


def limits() -> Limits:
    current = settings()
    return Limits(current.hog_size, current.hard_limit)


def dispatcher(spec: ContextSpec) -> dispatch.Dispatching:
    """This process's dispatcher for a context, started on first use."""
    current = settings()
    return dispatch.ensure(store(), spec, current.cluster_timeout, scales=not current.uses_embedded_cluster)


def dispatch_all() -> list[dispatch.Dispatching]:
    """A dispatcher for every configured context (``moi server``, ``moi watchdog``)."""
    return [dispatcher(context_spec(name)) for name in context_specs()]


def get_context(ctx: str | Context) -> Context:
    """The Context for a name (or the Context itself); unknown names are an error."""
    if isinstance(ctx, Context):
        return ctx
    with _lock:
        if ctx not in _contexts:
            _contexts[ctx] = Context(context_spec(ctx), settings().cluster_timeout)
        return _contexts[ctx]
