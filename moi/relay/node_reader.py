"""Reading a followed tree from Redis: nodes' infos, and groups' children.

Anything may have been written into Redis behind moi's back. A node whose document
is not an info object, or a group whose ``:jobs`` key is not a set, is handed to
``report`` and left out, so one bad key cannot close a user's socket on every reconnect.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from moi.core.errors import BadDocument, MoiError
from moi.core.info import Info, Stored
from moi.relay.hub import Hub


class NodeReader:
    def __init__(self, hub: Hub, report: Callable[[MoiError], None]) -> None:
        self.hub = hub
        self.keys = hub.keys
        self.report = report

    async def members(self, groups: list[str]) -> dict[str, set[str]]:
        """The children of each group; a ``:jobs`` key that is not a set is reported, and has none."""
        pipe = self.hub.redis.pipeline(transaction=False)
        for group_id in groups:
            pipe.smembers(self.keys.children(group_id))
        found: dict[str, set[str]] = {}
        for group_id, kids in zip(groups, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(kids, redis.ResponseError):
                if "WRONGTYPE" not in str(kids):
                    raise kids
                self.report(BadDocument(self.keys.children(group_id), "it is not a Redis set"))
                kids = set()
            found[group_id] = set(kids)
        return found

    async def read(self, ids: list[str], bad: set[str] | None = None) -> dict[str, Info]:
        """Current infos of ids that exist, oldest first. A bad document is reported and
        left out (its id added to ``bad``)."""
        if not ids:
            return {}
        raws = await self.hub.mget([self.keys.info(node_id) for node_id in ids])
        infos = []
        for node_id, raw in zip(ids, raws, strict=True):
            info = self.parse(node_id, raw) if raw is not None else None
            if info is not None:
                infos.append(info)
            elif raw is not None and bad is not None:
                bad.add(node_id)
        infos.sort(key=lambda info: info["date_created"])  # a string: parse checked it
        return {info["id"]: info for info in infos}

    def parse(self, node_id: str, raw: str) -> Stored | None:
        """A node's document as read, checked; None (and reported) for one that is not an info object."""
        try:
            return Stored.checked(self.keys.info(node_id), raw, node_id)
        except BadDocument as error:
            self.report(error)
            return None
