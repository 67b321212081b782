"""moi: dispatch compute to an ipyparallel cluster and watch every job live.

Importing moi opens no connection and starts nothing: ``r_client`` and the
contexts (``ctxs``) connect on first use. ``ctx_default`` (the default
context's name) and ``REDIS_KEY_TIMEOUT`` (the lifetime of moi's keys, in
seconds) are read from the settings when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moi.core.errors import MoiError
from moi.core.info import Status
from moi.jobs import connections
from moi.jobs.compat import ctxs
from moi.jobs.connections import configure, settings

__all__ = [
    "configure",
    "settings",
    "ctx_default",
    "ctxs",
    "r_client",
    "REDIS_KEY_TIMEOUT",
    "moi_js",
    "moi_list_js",
    "MoiError",
    "Status",
]
__version__ = "0.1.0"


class _LazyRedis:
    """The application's Redis client, made on first use (moi's own settings)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(connections.get_redis(), name)

    def __repr__(self) -> str:
        return "<moi.r_client (connects on first use)>"


r_client: Any = _LazyRedis()


_STATIC = Path(__file__).resolve().parent / "web" / "static"


def moi_js() -> str:
    """The absolute path of the packaged ``moi.js``, for an application to serve."""
    return str(_STATIC / "moi.js")


def moi_list_js() -> str:
    """The absolute path of the packaged ``moi_list.js`` (the original list widget)."""
    return str(_STATIC / "moi_list.js")


def __getattr__(name: str) -> Any:
    if name == "ctx_default":
        return connections.settings().default_context
    if name == "REDIS_KEY_TIMEOUT":
        return connections.settings().ttl
    raise AttributeError(f"module 'moi' has no attribute {name!r}")
