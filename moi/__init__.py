"""moi: dispatch compute to an ipyparallel cluster and watch every job live.

Importing moi opens no connection and starts nothing: ``r_client`` and the
contexts connect on first use.
"""

from __future__ import annotations

from typing import Any

from .connections import configure
from .errors import MoiError
from .info import Status

__all__ = ["configure", "ctx_default", "r_client", "MoiError", "Status"]
__version__ = "0.1.0"


class _LazyRedis:
    """The application's Redis client, made on first use (moi's own settings)."""

    def __getattr__(self, name: str) -> Any:
        from .connections import get_redis

        return getattr(get_redis(), name)

    def __repr__(self) -> str:
        return "<moi.r_client (connects on first use)>"


r_client: Any = _LazyRedis()


def __getattr__(name: str) -> Any:
    if name == "ctx_default":
        from .connections import settings

        return settings().default_context
    raise AttributeError(f"module 'moi' has no attribute {name!r}")
