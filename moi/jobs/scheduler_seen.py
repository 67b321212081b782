"""A scheduler context as its poller last saw it, for ``moi status``, the operations page and its API.

The poller (``moi.compute.schedulers.poller``) writes ``keys.scheduler_seen(context)`` after every poll: the
scheduler's kind, where it runs, whether it could be reached, the error if not, when, and how many of moi's
jobs are pending and running there. Read here with what the configuration says, so a context never polled yet
still shows its kind and where. ``where`` is ``user@host:port`` or ``this machine``: never a key or a password.
"""

from __future__ import annotations

import json
from typing import Any

from moi.core.config import ContextSpec
from moi.core.redact import printable
from moi.storage.redis_errors import reaching
from moi.storage.store import Store


def read(store: Store, spec: ContextSpec) -> dict[str, Any] | None:
    """``{kind, where, reachable, error, polled, pending, running}`` of a scheduler context; None for a context of
    engines. ``reachable`` and ``polled`` are None until its poller has polled once."""
    if spec.scheduler is None:
        return None
    with reaching(store.url):
        note = store.redis.get(store.keys.scheduler_seen(spec.name))
    try:
        seen = json.loads(note) if note else {}
    except ValueError:  # written behind moi's back: as if never polled
        seen = {}
    seen = seen if isinstance(seen, dict) else {}
    return {
        "kind": spec.scheduler.kind,
        "where": spec.scheduler.where,
        "reachable": seen.get("reachable") if isinstance(seen.get("reachable"), bool) else None,
        "error": printable(seen.get("error") or "", 300),
        "polled": printable(seen["polled"], 40) if seen.get("polled") else None,
        "pending": _count(seen.get("pending")),
        "running": _count(seen.get("running")),
    }


def line(name: str, seen: dict[str, Any], queued: int) -> str:
    """``context hpc: slurm on alice@login:22, reachable, 3 pending, 1 running, 2 queued; last poll TIME``."""
    if seen["reachable"] is None:
        state = "not polled yet (no poller running)"
    else:
        state = "reachable" if seen["reachable"] else "unreachable"
    text = f"context {name}: {seen['kind']} on {seen['where']}, {state}"
    text += f", {seen['pending']} pending, {seen['running']} running, {queued} queued"
    if seen["polled"]:
        text += f"; last poll {seen['polled'][:19]}"
    if seen["error"]:
        text += f"; error: {seen['error']}"
    return text


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
