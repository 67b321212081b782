"""The ``[files]`` settings as text: lists, ``fetch_allow`` rules, paths under a root.

Read here, below the settings (which check them when they are read) and the input policy (which
applies them), so that neither imports the other.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Any

from moi.core import values
from moi.core.errors import ConfigError


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_allow(entries: Iterable[str]) -> list[tuple[Any, int | None]]:
    """fetch_allow entries as (network, port or None): ``10.1.2.0/24``, ``10.0.0.5``, ``127.0.0.1:80``, ``[::1]:80``."""
    rules = []
    for entry in entries:
        host, port = host_port(entry)
        try:
            rules.append((ipaddress.ip_network(host, strict=False), port))
        except ValueError:
            raise ConfigError(
                f"[files] fetch_allow lists {entry!r}; write a network (10.1.2.0/24), an address, or address:port"
            ) from None
    return rules


def host_port(entry: str) -> tuple[str, int | None]:
    entry = entry.strip()
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and values.is_whole(rest[1:], 5) else None
    host, sep, port = entry.rpartition(":")
    if sep and values.is_whole(port, 5) and ":" not in host:
        return host, int(port)
    return entry, None


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
