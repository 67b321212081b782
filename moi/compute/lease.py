"""A lease in Redis: which of the processes that could do a context's work does it now.

Every process that may dispatch for a context (or poll its batch scheduler) holds a ``Lease``; one of them
holds the key at a time and renews it each tick; the others take over within ``LEASE`` seconds if it goes.
"""

from __future__ import annotations

from moi.storage.store import Store

LEASE = 10.0  # seconds a leader's lease lasts unless renewed


class Lease:
    def __init__(self, store: Store, key: str, me: str) -> None:
        self.store, self.key, self.me = store, key, me

    def take(self) -> bool:
        """Take or renew the lease; whether this process leads now."""
        client, lease_ms = self.store.redis, int(LEASE * 1000)
        if client.set(self.key, self.me, px=lease_ms, nx=True):
            return True
        if client.get(self.key) == self.me:
            client.pexpire(self.key, lease_ms)
            return True
        return False

    def release(self) -> None:
        client = self.store.redis
        if client.get(self.key) == self.me:
            client.delete(self.key)
