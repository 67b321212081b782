"""Following a group's whole subtree over pub/sub, for one websocket (or anyone).

A ``Group`` subscribes, through the process's shared ``Hub``, to the channel
of its group and of every descendant (nested groups included), and forwards
each change as an info object to ``callback(action, info)`` with action one of
``add``, ``update``, ``remove``, ``get``.

- It subscribes to a node's channel before it reads the node (or a group's
  children), so a change made between the read and the subscription cannot
  be lost: it arrives as a message and is applied after the read.
- It keeps the last info it forwarded for every node it follows: an update
  is forwarded only when the node's ``revision`` went up (no duplicates, no
  going back), and a removed node is forwarded with its last known info.
- Pub/sub messages and requests (``get``, ``remove``) are handled one at a
  time, in order, by one task per Group, so they never interleave.

Anything may have been written into Redis behind moi's back. A node whose
document is not an info object (or a group whose ``:jobs`` key is not a set)
is skipped, never followed, and reported to ``on_problem`` (the socket sends
it as an error frame), so one bad key cannot close a user's socket on every
reconnect.

Its parts: ``moi.relay.group_queue`` (the one task), ``moi.relay.node_reader`` (reading the
tree, bad documents reported), ``moi.relay.node_removal`` (``remove_nodes``, the one place
that removes nodes from Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis

from moi.core.errors import MoiError, NotInGroup, RootRemoval
from moi.core.info import Info, has_children
from moi.core.redact import printable
from moi.relay.group_queue import GroupWorker
from moi.relay.hub import Hub
from moi.relay.node_reader import NodeReader
from moi.relay.node_removal import remove_nodes

log = logging.getLogger("moi.group")

Callback = Callable[[str, Info], None]
# Frames forwarded in a row before the event loop gets a turn: writes finish, other sockets are served.
FORWARD_BURST = 64
Problem = Callable[[MoiError], None]


class Group:
    def __init__(self, hub: Hub, group_id: str, callback: Callback, on_problem: Problem | None = None) -> None:
        self.hub = hub
        self.keys = hub.keys
        self.group_id = group_id
        self.callback = callback
        self.on_problem = on_problem
        self._known: dict[str, Info] = {}  # last info forwarded (or read) per followed node
        self._children: dict[str, set[str]] = {}  # followed group -> its children
        self._worker = GroupWorker(hub.url, group_id)  # runs messages and requests one at a time, in order
        self._reader = NodeReader(hub, self._report)

    # public ------------------------------------------------------------------

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._known

    def kind_of(self, node_id: str) -> str | None:
        """``job`` or ``group`` for a followed node; None for one not followed."""
        info = self._known.get(node_id)
        return None if info is None else str(info.get("type"))

    @property
    def followed(self) -> set[str]:
        return set(self._known)

    async def start(self) -> None:
        """Follow the subtree: subscribe, then read. Forwards nothing by itself."""
        self._worker.start()
        await self._worker.call(self._start)

    async def get(self, ids: Iterable[str]) -> None:
        """Forward ``get`` for each id; a group brings its whole subtree along."""
        await self._worker.call(lambda: self._get(list(ids)))

    async def remove(self, ids: Iterable[str]) -> None:
        """Delete nodes (and their descendants) from Redis; the relay then forwards ``remove``."""
        await self._worker.call(lambda: self._remove(list(ids)))

    async def close(self) -> None:
        await self._worker.close()
        channels = [self.keys.channel(node_id) for node_id in self._known]
        self._known.clear()
        self._children.clear()
        with contextlib.suppress(redis.RedisError, OSError):
            await self.hub.unsubscribe(channels, self)

    # Listener (called by the hub; must not block) -----------------------------

    def message(self, channel: str, payload: dict[str, Any]) -> None:
        node_id = self.keys.node_of_channel(channel)
        for action, ids in payload.items():
            if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
                continue
            if action == "update" and not self._worker.closed and all(i in self._known for i in ids):
                # The common case, kept off the worker queue: no task switch per update.
                self.hub.read_soon([self.keys.info(i) for i in ids], functools.partial(self._updated, node_id, ids))
            else:
                self._worker.post(functools.partial(self._on_message, node_id, action, ids))

    def resync(self) -> None:
        self._worker.post(self._resync)

    # reading the tree ------------------------------------------------------

    async def _start(self) -> None:
        await self._follow([self.group_id], parent=None)

    async def _follow(self, ids: Iterable[str], parent: str | None) -> list[Info]:
        """Subscribe to nodes not followed yet, then read them and, level by level,
        their descendants. Returns the new nodes, parents before children."""
        found: list[Info] = []
        level = [node_id for node_id in dict.fromkeys(ids) if node_id not in self._known]
        while level:
            await self.hub.subscribe([self.keys.channel(node_id) for node_id in level], self)
            infos = await self._reader.read(level)
            groups = []
            for node_id in level:
                info = infos.get(node_id)
                if info is None or (parent is not None and info.get("parent") != parent):
                    await self.hub.unsubscribe([self.keys.channel(node_id)], self)
                    continue
                self._known[node_id] = info
                found.append(info)
                if has_children(info):
                    groups.append(node_id)
            level = await self._read_children(groups)
            parent = None  # below the first level, membership comes from the sets themselves
        return found

    async def _read_children(self, groups: list[str]) -> list[str]:
        if not groups:
            return []
        new: list[str] = []
        for group_id, kids in (await self._reader.members(groups)).items():
            self._children[group_id] = kids
            new.extend(kid for kid in sorted(kids) if kid not in self._known)
        return list(dict.fromkeys(new))

    def _report(self, error: MoiError) -> None:
        log.warning("skipping a node of group %s: %s", self.group_id, printable(error))
        if self.on_problem is not None:
            try:
                self.on_problem(error)
            except Exception:
                log.exception("the problem callback of group %s failed", self.group_id)

    def _subtree(self, node_id: str) -> list[str]:
        """A followed node and its followed descendants, parents first."""
        order, pending = [], [node_id]
        while pending:
            current = pending.pop(0)
            if current in self._known and current not in order:
                order.append(current)
                pending.extend(sorted(self._children.get(current, ())))
        return order

    # handling pub/sub messages ----------------------------------------------

    async def _on_message(self, node_id: str, action: str, ids: list[str]) -> None:
        if node_id not in self._known:
            return  # a message still in flight for a node we stopped following
        if action == "add" and node_id in self._children:
            self._children[node_id].update(ids)
            for info in await self._follow(ids, parent=node_id):
                self._forward("add", info)
        elif action == "remove" and node_id in self._children:
            for child in ids:
                if child in self._children[node_id]:
                    self._children[node_id].discard(child)
                    await self._drop(child)
        elif action == "update":
            await self._refresh([i for i in ids if i in self._known], "update")
        elif action == "get":
            await self._refresh([i for i in ids if i in self._known], "get", always=True)

    def _updated(self, node_id: str, ids: list[str], raws: list[str | None] | BaseException) -> None:
        """An update of nodes already followed, as read: forward those whose revision went up.

        Safe beside the worker: it only forwards known nodes, newer than what was forwarded.
        Anything else (a node gone, a failed read) takes the queued way, in order.
        """
        if self._worker.closed:
            return
        if isinstance(raws, BaseException):
            self._worker.post(functools.partial(self._on_message, node_id, "update", ids))
            return
        for child, raw in zip(ids, raws, strict=True):
            if child not in self._known:
                continue  # dropped meanwhile
            if raw is None:
                self._worker.post(functools.partial(self._on_message, node_id, "update", [child]))
            else:
                info = self._reader.parse(child, raw)
                if info is not None:  # a bad one is reported; the page keeps the last good state
                    self._take("update", info)

    async def _refresh(self, ids: list[str], action: str, always: bool = False) -> None:
        """Re-read nodes; forward those that changed (or all, with ``always``).

        A node that now holds a bad document is reported and kept as it was last seen."""
        bad: set[str] = set()
        infos = await self._reader.read(ids, bad)
        for count, node_id in enumerate(ids, 1):
            info = infos.get(node_id)
            if node_id in bad:
                continue
            if info is None:
                await self._drop(node_id)  # it expired or was deleted
            else:
                self._take(action, info, always)
            if count % FORWARD_BURST == 0:
                await asyncio.sleep(0)  # a big tree does not hold the loop; its writes can complete

    def _take(self, action: str, info: Info, always: bool = False) -> None:
        """Keep and forward a node's info if its revision went up (or always): never backwards."""
        if always or _revision(info) > _revision(self._known.get(info["id"])):
            self._known[info["id"]] = info
            self._forward(action, info)

    async def _drop(self, node_id: str) -> None:
        """Stop following a node and its descendants; forward ``remove`` for each, children first."""
        subtree = self._subtree(node_id)
        parent = self._known[node_id].get("parent") if node_id in self._known else None
        for gone in reversed(subtree):
            info = self._known.pop(gone)
            self._children.pop(gone, None)
            self._forward("remove", info)
        if parent in self._children:
            self._children[parent].discard(node_id)
        await self.hub.unsubscribe([self.keys.channel(gone) for gone in subtree], self)

    async def _resync(self) -> None:
        """After lost messages: forward what changed since, as add/update/remove."""
        if self.group_id not in self._known:
            return
        await self._refresh(list(self._known), "update")
        members = await self._reader.members([g for g in list(self._children) if g in self._known])
        for group_id, kids in members.items():
            if group_id not in self._known:
                continue  # dropped by an earlier step of this loop
            known = self._children.get(group_id, set())
            for gone in sorted(known - kids):
                if gone in self._known:
                    await self._drop(gone)
            self._children[group_id] = kids
            for info in await self._follow(sorted(kids - set(self._known)), parent=group_id):
                self._forward("add", info)

    # requests ----------------------------------------------------------------

    def _check(self, ids: list[str]) -> None:
        for node_id in ids:
            if node_id not in self._known:
                raise NotInGroup(node_id)

    async def _get(self, ids: list[str]) -> None:
        self._check(ids)
        seen: set[str] = set()
        for node_id in ids:
            subtree = [i for i in self._subtree(node_id) if i not in seen]
            seen.update(subtree)
            await self._refresh(subtree, "get", always=True)

    async def _remove(self, ids: list[str]) -> None:
        self._check(ids)
        if self.group_id in ids:
            raise RootRemoval(self.group_id)
        await remove_nodes(self.hub.redis, self.keys, ids)

    def _forward(self, action: str, info: Info) -> None:
        if has_children(info):
            # Lets a client drop rows of children that went away while it was offline.
            info = {**info, "jobs": sorted(self._children.get(info["id"], ()))}
        try:
            self.callback(action, info)
        except Exception:
            log.exception("the callback of group %s failed on %s", self.group_id, action)


def _revision(info: Info | None) -> int:
    return int(info.get("revision", 0)) if info else -1
