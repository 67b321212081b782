"""moi: dispatch compute to an ipyparallel cluster and watch every job live.

Importing moi opens no connection and starts nothing: ``r_client`` and the
contexts (``ctxs``) connect on first use. ``ctx_default`` (the default
context's name) and ``REDIS_KEY_TIMEOUT`` (the lifetime of moi's keys, in
seconds) are read from the settings when asked for.

The public import paths, each with an explicit ``__all__`` (everything else in moi
is private to its layer and may move; docs/architecture.md draws the layers):

    ``moi``            settings (``configure``, ``settings``), contexts, the Redis client, ``MoiError``, ``Status``
    ``moi.job``        submitting jobs and acting on them from Python, under the original moi's names
    ``moi.group``      following a group's subtree live, and the original moi's user and info helpers
    ``moi.websocket``  the websocket relay: ``MOIMessageHandler``, to mount in a Tornado application
    ``moi.server``     ``moi server``'s Tornado application (``make_app``, ``serve``)
    ``moi.client``     a Python client of moi's HTTP API, for scripts on other machines
    ``moi.services``   services: defining, registering and submitting named job types
    ``moi.files``      a job's files: its directory, inputs, outputs, and ``delete``
    ``moi.errors``     moi's one exception hierarchy, for code that catches moi's errors
    ``moi.cli``        the ``moi`` command (``main``), and how it formats and waits for a job
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
