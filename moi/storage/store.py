"""Changing the group/job tree in Redis: new nodes, and every change to a node.

Every change to a job goes through ``Store.update``: a compare-and-set on the
info object's ``revision`` done by one Lua script, which also publishes the
announcement. Writers never overwrite each other's change (status_update
racing the final state, a cancel racing the engine), and every change bumps
the revision so clients can drop stale updates.

``Store`` is the one object the rest of moi holds: it reads the tree as ``moi.storage.tree.Tree``
does and finds users' groups as ``moi.storage.groups.Groups`` does, and adds the writes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import redis

from moi.core.errors import BadDocument, UnknownId
from moi.core.info import Info, dumps, is_finished, new_id, new_info, parse
from moi.core.keys import Keys
from moi.core.lua import ADD_UNDER, COMPARE_AND_SET, COMPARE_AND_SET_MANY, COMPARE_AND_SET_UNLESS
from moi.core.lua_retry import COMPARE_AND_SET_UNLESS_KEY
from moi.storage import finished_counts, redis_clients, retention
from moi.storage.groups import Groups
from moi.storage.redis_errors import reaching
from moi.storage.tree import report_bad

# A change to an info object: the new info, or None for no change.
Change = Callable[[Info], "Info | None"]


class _Write(NamedTuple):
    """One document of an ``update_many`` round: the change that made it, and the status it replaces."""

    node_id: str
    change: Change
    new: Info
    old_status: Any


def message(action: str, ids: Iterable[str]) -> str:
    """The one pub/sub payload shape: ``{action: [ids]}``."""
    return json.dumps({action: list(ids)})


class Store(Groups):
    """The tree, read and written: the one writer of job state (``update`` and ``update_many``)."""

    def __init__(self, client: redis.Redis[str], keys: Keys, ttl: int, url: str = "") -> None:
        super().__init__(client, keys, ttl, url)
        self._cas = client.register_script(COMPARE_AND_SET)
        self._cas_unless = client.register_script(COMPARE_AND_SET_UNLESS)
        self._cas_unless_key = client.register_script(COMPARE_AND_SET_UNLESS_KEY)
        self._cas_many = client.register_script(COMPARE_AND_SET_MANY)
        self._add_under = client.register_script(ADD_UNDER)

    def add_under(self, group_id: str, infos: list[Info], ttl: int | None = None) -> bool:
        """Store new nodes under a group that must still exist, and announce them: one round trip.

        False (nothing written) if the group no longer exists. Jobs go through ``moi.queue.jobqueue``.
        ``ttl``: how long they are kept (a service job's steps live as long as it does).
        """
        args: list[Any] = [ttl or self.ttl, self.keys.channel(group_id), message("add", [info["id"] for info in infos])]
        args.append(self.keys.prefix)
        for info in infos:
            info["parent"] = group_id
            args += [info["id"], dumps(info)]
        keys = [self.keys.info(group_id), self.keys.children(group_id)]
        with reaching(self.url), self.holding((keys[1], "set")):
            return bool(self._add_under(keys=keys, args=args))

    def create_group(self, name: str, parent: str | None = None) -> str:
        """A new (sub)group; under ``parent`` when given, announced there."""
        gid = new_id()
        info = new_info(gid, name, "group", self.keys.channel(gid), parent=parent)
        self.add_nodes(parent, [info]) if parent else self.put_top_level(info)
        return gid

    def put_top_level(self, info: Info) -> None:
        """Store a node that has no parent (nothing to announce it on)."""
        with reaching(self.url):
            self.redis.set(self.keys.info(info["id"]), dumps(info), ex=self.ttl)

    def add_nodes(self, group_id: str | None, infos: list[Info]) -> None:
        """Store new nodes under a group and announce them, in one round trip."""
        if group_id is None:
            raise ValueError("a node needs a parent group")
        ids = [info["id"] for info in infos]
        pipe = self.redis.pipeline(transaction=True)
        for info in infos:
            pipe.set(self.keys.info(info["id"]), dumps(info), ex=self.ttl)
        pipe.sadd(self.keys.children(group_id), *ids)
        pipe.expire(self.keys.children(group_id), self.ttl)
        pipe.expire(self.keys.info(group_id), self.ttl)
        pipe.publish(self.keys.channel(group_id), message("add", ids))
        with reaching(self.url), self.holding((self.keys.children(group_id), "set")):
            pipe.execute()

    def update(
        self,
        node_id: str,
        change: Callable[[Info], Info | None],
        known: Info | None = None,
        also: Sequence[Sequence[str | int]] = (),
        unless_in: str | None = None,
        unless_key: str | None = None,
    ) -> Info:
        """Apply ``change`` atomically; it returns the new info, or None for no change.

        ``known`` is the caller's last copy; when it is current, this is one
        round trip. ``also``: Redis commands run in the same atomic step, if
        (and only if) the change is written. ``unless_in``: a set; while the
        node is in it, nothing is written. ``unless_key``: a key; while it
        exists, nothing is written. Returns the info as it now stands (not the
        change's own dict when it was refused so).
        """
        info = known if known is not None else self.get(node_id)
        while True:
            changed = change(dict(info))
            if changed is None:
                return info
            changed["revision"] = info["revision"] + 1
            extra = _command_words([*also, *self._ending(node_id, changed, info)])
            args = [info["revision"], dumps(changed), self.ttl_of(changed), self.keys.channel(node_id)]
            args += [message("update", [node_id]), *extra]
            outcome = self._compare_and_set(node_id, args, unless_in, unless_key)
            if outcome == 1:
                return changed
            if outcome == 0:
                return info  # refused: the node is in ``unless_in``, or ``unless_key`` exists
            if outcome == -1:
                raise UnknownId(node_id)
            info = parse(self.keys.info(node_id), outcome, node_id)  # someone else changed it: merge again

    def _compare_and_set(self, node_id: str, args: list[Any], unless_in: str | None, unless_key: str | None) -> Any:
        """One compare-and-set of ``update``'s, refused (0) while the node is in ``unless_in`` or ``unless_key``
        exists."""
        info_key = self.keys.info(node_id)
        with reaching(self.url):
            if unless_in is not None:
                return self._cas_unless(keys=[info_key, unless_in], args=[node_id, *args])
            if unless_key is not None:
                return self._cas_unless_key(keys=[info_key, unless_key], args=args)
            return self._cas(keys=[info_key], args=args)

    def update_many(
        self, changes: list[tuple[str, Change, Info]], also: Sequence[Sequence[str | int]] = ()
    ) -> dict[str, Info]:
        """``update`` for many nodes in one round trip: ``(node_id, change, known)`` each.

        A node may appear more than once; its changes apply in order, each
        published. Nodes whose ``known`` copy was stale are merged and retried
        (rare). Returns node id -> info as it now stands; a node that no longer
        exists (removed meanwhile) is left out rather than failing the others.
        ``also``: Redis commands run in the same call (once, whatever the outcome).
        """
        extra = also
        pending = list(changes)
        outcome: dict[str, Info] = {}
        gone: set[str] = set()
        while pending:
            writes = self._writes(pending, outcome)
            if not writes:
                break
            answers = self.write_many([(w.node_id, w.new) for w in writes], extra, [w.old_status for w in writes])
            extra = []  # once is enough
            pending = self._settle(writes, answers, outcome, gone)
        return outcome

    def write_many(
        self,
        writes: list[tuple[str, Info]],
        also: Sequence[Sequence[str | int]] = (),
        old_statuses: Sequence[Any] = (),
    ) -> list[Any]:
        """One compare-and-set call for changed documents (``revision`` already bumped), each published.

        Per document: 1 (written), -1 (no such node) or the current document (changed meanwhile).
        ``old_statuses``: each document's status before, so a job's end is counted (``moi.storage.finished_counts``).
        ``update_many`` is the usual way in; this is its single round trip.
        """
        args: list[Any] = [self.ttl]
        ending: list[list[str | int]] = []
        before = list(old_statuses) or [None] * len(writes)
        for (node_id, new), old_status in zip(writes, before, strict=True):
            args += [new["revision"] - 1, dumps(new), self.keys.channel(node_id), message("update", [node_id])]
            ending += self._ending(node_id, new, old_status=old_status)
        args += _command_words([*also, *ending])
        with reaching(self.url):
            return list(self._cas_many(keys=[self.keys.info(node_id) for node_id, _ in writes], args=args))

    def _ending(
        self, node_id: str, new: Info, old: Info | None = None, old_status: Any = None
    ) -> list[list[str | int]]:
        """What goes with a write: at a job's final one, it no longer counts against its owner's limits
        and is counted for /metrics (``moi.storage.finished_counts``); a service job's due indexes and mails (see
        ``moi.storage.retention``; ``old``: the state it changes)."""
        commands = retention.state_commands(self.keys, node_id, new, old)
        ended_from = old.get("status") if old is not None else old_status
        commands += finished_counts.ending_commands(self.keys, new, ended_from)
        owner = new.get("owner")
        if owner and is_finished(new):
            commands.append(["SREM", self.keys.active(str(owner)), node_id])
        return commands

    def ttl_of(self, info: Info) -> int:
        """How long Redis keeps ``info`` after a write: a service job's own ttl, else the blanket one."""
        return retention.ttl_of(info, self.ttl)

    @staticmethod
    def _writes(pending: list[tuple[str, Change, Info]], outcome: dict[str, Info]) -> list[_Write]:
        """The documents to write, each change applied to the node's latest copy in this round."""
        writes = []
        latest: dict[str, Info] = {}
        for node_id, change, known in pending:
            info = latest.get(node_id, known)
            changed = change(dict(info))
            if changed is None:
                outcome[node_id] = info
                continue
            changed["revision"] = info["revision"] + 1
            latest[node_id] = changed
            writes.append(_Write(node_id, change, changed, info.get("status")))
        return writes

    def _settle(
        self, writes: list[_Write], answers: list[Any], outcome: dict[str, Info], gone: set[str]
    ) -> list[tuple[str, Change, Info]]:
        """Record what was written; what lost a race is retried from the current copy."""
        retry = []
        for write, answer in zip(writes, answers, strict=True):
            node_id = write.node_id
            if answer == 1:
                outcome[node_id] = write.new
            elif answer == -1:
                gone.add(node_id)
                outcome.pop(node_id, None)
            elif (current := self._still_info(node_id, answer)) is not None:
                retry.append((node_id, write.change, current))  # changed meanwhile: merge again
            else:
                gone.add(node_id)
                outcome.pop(node_id, None)
        return [entry for entry in retry if entry[0] not in gone]

    def _still_info(self, node_id: str, text: str) -> Info | None:
        """The current document of a node a write lost to; None (logged) if it was overwritten with something else."""
        try:
            return parse(self.keys.info(node_id), text, node_id)
        except BadDocument as error:  # as good as gone: the other nodes of the call go on
            report_bad(error, None)
            return None

    def publish(self, node_id: str, action: str, ids: Iterable[str]) -> None:
        with reaching(self.url):
            self.redis.publish(self.keys.channel(node_id), message(action, ids))


def _command_words(commands: Sequence[Sequence[str | int]]) -> list[str | int]:
    """Commands that ride along with a compare-and-set, as the scripts read them: length, then words."""
    return [word for command in commands for word in (len(command), *command)]


@functools.lru_cache(maxsize=8)
def store_for(url: str, prefix: str, ttl: int) -> Store:
    """One Store (and connection pool) per Redis URL, per process; engines use this."""
    client = redis_clients.sync_client(url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30)
    return Store(client, Keys(prefix), ttl, url)


def set_fields(**fields: Any) -> Callable[[Info], Info]:
    def change(info: Info) -> Info:
        info.update(fields)
        return info

    return change
