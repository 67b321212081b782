"""A few threads for slow checks (a password's argon2 hash, a PAM conversation), bounded twice.

At most ``workers`` checks run at once, in threads of their own (not the event loop's default
executor, which the rest of the server shares), and at most ``waiting`` more wait for one.
A caller takes a ``place`` first, before any other await, and refuses at once when there is none:
a flood of logins gets "busy, try again" instead of a queue that stalls everyone else's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class BoundedPool:
    def __init__(self, workers: int = 2, waiting: int = 8, name: str = "moi-check") -> None:
        self.workers, self.waiting, self.name = workers, waiting, name
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0  # running and waiting; touched from the event loop's thread only

    @property
    def full(self) -> bool:
        return self._pending >= self.workers + self.waiting

    @contextlib.contextmanager
    def place(self) -> Iterator[bool]:
        """One caller's place for its checks while the block runs; False when the pool is full (refuse)."""
        if self.full:
            yield False
            return
        self._pending += 1
        try:
            yield True
        finally:
            self._pending -= 1

    async def run(self, check: Callable[[], T]) -> T:
        """``check()``'s result, from one of the pool's threads; only while holding a ``place``."""
        if self._executor is None:  # made on first use: importing this module starts no thread
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        return await asyncio.get_running_loop().run_in_executor(self._executor, check)
