"""Work a closed socket leaves behind (its group unsubscribing, its token watch stopping), run to its end."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_CLOSING: set[asyncio.Task[None]] = set()  # work of closed sockets, still under way


def in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` on the running loop without waiting for it."""
    task = asyncio.get_running_loop().create_task(work)
    _CLOSING.add(task)  # held: the loop keeps only a weak reference to a task
    task.add_done_callback(_CLOSING.discard)
