"""A context's wake channel: a submit publishes on ``Pmoi:wake:<ctx>``, and the context's loop (a dispatcher, or a
scheduler context's poller) wakes at once rather than at its next tick.

The channel is a shortcut: without it the loop still looks every tick. Its thread blocks ``LISTEN_POLL`` seconds
per read (a message wakes it at once); its stop, at every submitting process's exit, waits out the read under way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from moi.storage.store import Store

log = logging.getLogger("moi.dispatch")

LISTEN_POLL = 0.2  # short: 1 s cost each `moi submit` ~0.85 s more at its exit


class WakeChannel:
    """Sets ``wake`` on each announcement of context ``name``'s channel; ``listen`` once Redis answers."""

    def __init__(self, store: Store, name: str, wake: threading.Event, stopping: threading.Event, tick: float):
        self.store, self.name, self.wake, self.stopping, self.tick = store, name, wake, stopping, tick
        self._pubsub: Any = None
        self._listener: Any = None

    @property
    def listening(self) -> bool:
        return self._pubsub is not None

    def listen(self) -> None:
        pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{self.store.keys.wake(self.name): lambda _message: self.wake.set()})
        self._pubsub = pubsub
        self._listener = pubsub.run_in_thread(sleep_time=LISTEN_POLL, daemon=True, exception_handler=self._failed)

    def stop(self) -> None:
        if self._pubsub is None:
            return
        with contextlib.suppress(Exception):
            self._listener.stop()
            self._listener.join(5)
            self._pubsub.close()

    def _failed(self, error: BaseException, pubsub: Any, thread: Any) -> None:
        if self.stopping.is_set():
            return
        log.warning("the loop of %s lost its wake channel (%s); looking every %gs", self.name, error, self.tick)
        time.sleep(self.tick)
