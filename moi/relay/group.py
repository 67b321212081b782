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

``remove_nodes`` is the one place that removes nodes from Redis (async).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis
import redis.asyncio as aioredis

from moi.core.errors import BadDocument, MoiError, NotInGroup, RedisRefused, RedisUnavailable, RootRemoval
from moi.core.info import Info, Stored, has_children, parse
from moi.core.keys import Keys
from moi.core.redact import printable
from moi.jobfiles import removal as job_files
from moi.relay.hub import Hub
from moi.storage.store import message

log = logging.getLogger("moi.group")

Callback = Callable[[str, Info], None]
# Frames forwarded in a row before the event loop gets a turn: writes finish, other sockets are served.
FORWARD_BURST = 64
Problem = Callable[[MoiError], None]
_Work = Callable[[], Awaitable[None]]


class Group:
    def __init__(self, hub: Hub, group_id: str, callback: Callback, on_problem: Problem | None = None) -> None:
        self.hub = hub
        self.keys = hub.keys
        self.group_id = group_id
        self.callback = callback
        self.on_problem = on_problem
        self._known: dict[str, Info] = {}  # last info forwarded (or read) per followed node
        self._children: dict[str, set[str]] = {}  # followed group -> its children
        self._queue: asyncio.Queue[tuple[_Work, asyncio.Future[None] | None]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

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
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"moi-group-{self.group_id}")
        await self._call(self._start)

    async def get(self, ids: Iterable[str]) -> None:
        """Forward ``get`` for each id; a group brings its whole subtree along."""
        await self._call(lambda: self._get(list(ids)))

    async def remove(self, ids: Iterable[str]) -> None:
        """Delete nodes (and their descendants) from Redis; the relay then forwards ``remove``."""
        await self._call(lambda: self._remove(list(ids)))

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
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
            if action == "update" and not self._closed and all(i in self._known for i in ids):
                # The common case, kept off the worker queue: no task switch per update.
                self.hub.read_soon([self.keys.info(i) for i in ids], functools.partial(self._updated, node_id, ids))
            else:
                self._post(functools.partial(self._on_message, node_id, action, ids))

    def resync(self) -> None:
        self._post(self._resync)

    # the worker ----------------------------------------------------------------

    def _post(self, work: _Work) -> None:
        if not self._closed:
            self._queue.put_nowait((work, None))

    async def _call(self, work: _Work) -> None:
        if self._worker is None or self._closed:
            raise RuntimeError("the group is not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((work, future))
        await future

    async def _work(self) -> None:
        while True:
            work, future = await self._queue.get()
            try:
                await work()
            except redis.ResponseError as error:
                # Redis answered (WRONGTYPE, NOAUTH, ...): not an outage, and no re-sync will fix it.
                self._fail(future, RedisRefused(self.hub.url, error), "redis refused a command while following %s: %s")
            except (TimeoutError, redis.RedisError, OSError) as error:
                # The hub re-syncs us once Redis is back.
                failure: Exception = RedisUnavailable(self.hub.url, error)
                self._fail(future, failure, "redis unavailable while following %s: %s")
            except Exception as error:
                self._fail(future, error, "while following %s: %s")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed or (task is not None and task.cancelling()):
                    raise
                # A cancelled wait inside a step; the worker itself carries on.
                self._fail(future, RedisUnavailable(self.hub.url, "cancelled"), "%s: %s")
            else:
                if future is not None and not future.done():
                    future.set_result(None)

    def _fail(self, future: asyncio.Future[None] | None, error: Exception, text: str) -> None:
        if future is None:
            log.warning(text, self.group_id, printable(error))
        elif not future.done():
            future.set_exception(error)

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
            infos = await self._read(level)
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
        for group_id, kids in (await self._members(groups)).items():
            self._children[group_id] = kids
            new.extend(kid for kid in sorted(kids) if kid not in self._known)
        return list(dict.fromkeys(new))

    async def _members(self, groups: list[str]) -> dict[str, set[str]]:
        """The children of each group; a ``:jobs`` key that is not a set is reported, and has none."""
        pipe = self.hub.redis.pipeline(transaction=False)
        for group_id in groups:
            pipe.smembers(self.keys.children(group_id))
        found: dict[str, set[str]] = {}
        for group_id, kids in zip(groups, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(kids, redis.ResponseError):
                if "WRONGTYPE" not in str(kids):
                    raise kids
                self._report(BadDocument(self.keys.children(group_id), "it is not a Redis set"))
                kids = set()
            found[group_id] = set(kids)
        return found

    async def _read(self, ids: list[str], bad: set[str] | None = None) -> dict[str, Info]:
        """Current infos of ids that exist, oldest first. A bad document is reported and
        left out (its id added to ``bad``)."""
        if not ids:
            return {}
        raws = await self.hub.mget([self.keys.info(node_id) for node_id in ids])
        infos = []
        for node_id, raw in zip(ids, raws, strict=True):
            info = self._parse(node_id, raw) if raw is not None else None
            if info is not None:
                infos.append(info)
            elif raw is not None and bad is not None:
                bad.add(node_id)
        infos.sort(key=lambda info: info["date_created"])  # a string: parse checked it
        return {info["id"]: info for info in infos}

    def _parse(self, node_id: str, raw: str) -> Stored | None:
        try:
            return Stored.checked(self.keys.info(node_id), raw, node_id)
        except BadDocument as error:
            self._report(error)
            return None

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
        if self._closed:
            return
        if isinstance(raws, BaseException):
            self._post(functools.partial(self._on_message, node_id, "update", ids))
            return
        for child, raw in zip(ids, raws, strict=True):
            if child not in self._known:
                continue  # dropped meanwhile
            if raw is None:
                self._post(functools.partial(self._on_message, node_id, "update", [child]))
            else:
                info = self._parse(child, raw)
                if info is not None:  # a bad one is reported; the page keeps the last good state
                    self._take("update", info)

    async def _refresh(self, ids: list[str], action: str, always: bool = False) -> None:
        """Re-read nodes; forward those that changed (or all, with ``always``).

        A node that now holds a bad document is reported and kept as it was last seen."""
        bad: set[str] = set()
        infos = await self._read(ids, bad)
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
        members = await self._members([g for g in list(self._children) if g in self._known])
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


async def remove_nodes(client: aioredis.Redis[str], keys: Keys, ids: list[str]) -> list[str]:
    """Delete nodes and their descendants from Redis, take them out of their
    parents' sets, and announce ``remove`` on each parent's channel (and an
    ``update`` on each removed node's own channel, for anyone following it
    directly). Returns every id removed."""
    raws = await client.mget([keys.info(node_id) for node_id in ids])
    # A bad document is refused (BadDocument, an error frame), not half removed.
    tops = [parse(keys.info(node_id), raw, node_id) for node_id, raw in zip(ids, raws, strict=True) if raw]
    removed, pending = [], [info["id"] for info in tops]
    while pending:
        current = pending.pop()
        if current not in removed:
            removed.append(current)
            pending.extend(await client.smembers(keys.children(current)))
    by_parent: dict[str, list[str]] = {}
    for info in tops:
        if info.get("parent"):
            by_parent.setdefault(info["parent"], []).append(info["id"])
    pipe = client.pipeline(transaction=True)
    pipe.delete(*[keys.info(node_id) for node_id in removed], *[keys.children(node_id) for node_id in removed])
    for parent, children in by_parent.items():
        pipe.srem(keys.children(parent), *children)
        pipe.publish(keys.channel(parent), message("remove", children))
    for node_id in removed:
        pipe.publish(keys.channel(node_id), message("update", [node_id]))
    pipe.zrem(keys.index_all, *removed)  # the API's listings (jobs met there later are dropped as they are read)
    for info in tops:
        if isinstance(info.get("owner"), str):
            pipe.zrem(keys.index(info["owner"]), info["id"])
    if removed:
        await pipe.execute()
        # Their files go with them (the sweeper would, later; now the owner sees them gone).
        moved = {info["id"]: info for info in tops}  # a service job's directory may have moved
        await asyncio.get_running_loop().run_in_executor(None, job_files.remove_directories, removed, moved)
    log.info("removed %d nodes", len(removed))
    return removed
