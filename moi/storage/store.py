"""Reading and changing the group/job tree in Redis.

Every change to a job goes through ``Store.update``: a compare-and-set on the
info object's ``revision`` done by one Lua script, which also publishes the
announcement. Writers never overwrite each other's change (status_update
racing the final state, a cancel racing the engine), and every change bumps
the revision so clients can drop stale updates.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import redis

from moi.core.errors import BadDocument, InvalidId, NotAGroup, RedisRefused, RedisUnavailable, UnknownId
from moi.core.info import Info, dumps, is_finished, new_id, new_info, parse
from moi.core.keys import Keys, _looks_like_id
from moi.core.lua import ADD_UNDER, COMPARE_AND_SET, COMPARE_AND_SET_MANY, COMPARE_AND_SET_UNLESS, ENSURE_GROUP
from moi.storage import redis_clients, retention, tally

log = logging.getLogger("moi.store")

# How long a process trusts its user -> group id lookup (the group's TTL is weeks).
GROUP_CACHE_SECONDS = 5.0

# A change to an info object: the new info, or None for no change.
Change = Callable[[Info], "Info | None"]


class _Write(NamedTuple):
    """One document of an ``update_many`` round: the change that made it, and the status it replaces."""

    node_id: str
    change: Change
    new: Info
    old_status: Any


# What each Redis type moi uses holds, for a message about a key holding something else.
_HOLDS = {"string": "a JSON info object", "set": "a set of ids", "hash": "a hash"}

# The name of a group created by id (submit to a uuid nobody used yet), as the original moi named it.
UNNAMED_GROUP = "unnamed"


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn a lost Redis connection into a one-line RedisUnavailable, a refused command into RedisRefused.

    A refusal (WRONGTYPE, a script error, a read-only replica) is Redis answering: calling it
    unreachable would send the user looking for an outage that is not there.
    """
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RedisUnavailable(url, _first_line(error)) from error
    except redis.ResponseError as error:
        raise RedisRefused(url, _first_line(error)) from error


def _is_group_id(key: str) -> bool:
    """Whether ``key`` is a group id (uuid-shaped) rather than a user name; InvalidId for a uuid spelled oddly.

    Only moi's own spelling (lowercase, hyphens) can be an id: ``{...}`` or upper case would be a
    second name for the same uuid, and cannot be a user name either.
    """
    if not _looks_like_id(key):
        return False
    if str(uuid.UUID(key)) != key:
        raise InvalidId(key)
    return True


def _report(error: BadDocument, bad: list[BadDocument] | None) -> None:
    """A bad document skipped in a listing: to the caller's list, or to the log when it keeps none."""
    if bad is None:
        log.warning("skipped: %s", error)  # the message escapes the key (moi.core.redact.printable)
    else:
        bad.append(error)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def message(action: str, ids: Iterable[str]) -> str:
    """The one pub/sub payload shape: ``{action: [ids]}``."""
    return json.dumps({action: list(ids)})


class Store:
    def __init__(self, client: redis.Redis[str], keys: Keys, ttl: int, url: str = "") -> None:
        self.redis = client
        self.keys = keys
        self.ttl = ttl
        self.url = url
        self._cas = client.register_script(COMPARE_AND_SET)
        self._cas_unless = client.register_script(COMPARE_AND_SET_UNLESS)
        self._ensure_group = client.register_script(ENSURE_GROUP)
        self._cas_many = client.register_script(COMPARE_AND_SET_MANY)
        self._add_under = client.register_script(ADD_UNDER)
        self._groups: dict[str, tuple[str, float]] = {}  # key -> (group id, good until)
        self._chains: dict[str, tuple[list[str], float]] = {}  # group id -> (it and its ancestors, good until)

    # reading -------------------------------------------------------------

    def get(self, node_id: str) -> Info:
        info = self.find(node_id)
        if info is None:
            raise UnknownId(node_id)
        return info

    def find(self, node_id: str) -> Info | None:
        """The info object of a node, None if there is none; BadDocument if the key holds something else."""
        key = self.keys.info(node_id)
        with reaching(self.url), self.holding((key, "string")):
            raw = self.redis.get(key)
        return parse(key, raw, node_id) if raw is not None else None

    def get_many(self, node_ids: Iterable[str], bad: list[BadDocument] | None = None) -> list[Info]:
        """The info objects that still exist, in the order asked.

        One bad document must not hide the others (a listing, the watchdog's pass): it is
        left out and added to ``bad``, or logged as a warning when the caller collects none.
        """
        ids = list(node_ids)
        if not ids:
            return []
        keys = [self.keys.info(node_id) for node_id in ids]
        with reaching(self.url):
            raws = self.redis.mget(keys)
        infos = []
        for node_id, key, raw in zip(ids, keys, raws, strict=True):
            if raw is None:
                continue
            try:
                infos.append(parse(key, raw, node_id))
            except BadDocument as error:
                _report(error, bad)
        return infos

    def children(self, group_id: str) -> set[str]:
        key = self.keys.children(group_id)
        with reaching(self.url), self.holding((key, "set")):
            return set(self.redis.smembers(key))

    def group_of_user(self, key: str) -> str | None:
        """The group ``key`` names by the rule of ``ensure_group``, or None when there is none (yet).

        Raises NotAGroup for the id of a job, BadDocument for a key holding something else.
        """
        if _is_group_id(key):
            info = self.find(key)
            if info is not None and info["type"] != "group":
                raise NotAGroup(key, "a job")
            return key if info is not None else None
        group_id = self._mapped(key)
        info = self.find(group_id) if group_id else None
        return group_id if info is not None and info["type"] == "group" else None

    def held(self, key: str) -> str | None:
        """What a key given by a user holds in Redis, for a message (``a Redis hash``); None if nothing."""
        kind = self._type_of(self.keys.info(key))
        return None if kind == "none" else f"a Redis {kind}"

    def _type_of(self, key: str) -> str:
        with reaching(self.url):
            return str(self.redis.execute_command("TYPE", key))

    def _mapped(self, user: str) -> str | None:
        with reaching(self.url), self.holding((self.keys.user_map, "hash")):
            return self.redis.hget(self.keys.user_map, user)

    @contextmanager
    def holding(self, *expected: tuple[str, str]) -> Iterator[None]:
        """Redis refusing a command for a key's type (WRONGTYPE) as a BadDocument naming that key.

        ``expected``: the keys the commands inside work on, each with the Redis type it must
        have. Someone wrote something else there; the user needs its name, not Redis's complaint.
        """
        try:
            yield
        except redis.ResponseError as error:
            if "WRONGTYPE" in str(error):
                for key, wanted in expected:
                    held = self._type_of(key)
                    if held not in (wanted, "none"):
                        raise BadDocument(key, f"it holds a Redis {held}, not {_HOLDS[wanted]}") from None
            raise

    def users(self) -> dict[str, str]:
        """user name -> group id, for users whose group still exists."""
        with reaching(self.url), self.holding((self.keys.user_map, "hash")):
            mapping = self.redis.hgetall(self.keys.user_map)
        # The map also holds group id -> user name; by the rule of ensure_group no user name looks like an id.
        names = {user: gid for user, gid in mapping.items() if not _looks_like_id(user)}
        alive = {info["id"] for info in self.get_many(sorted(set(names.values()))) if info["type"] == "group"}
        return {user: gid for user, gid in names.items() if gid in alive}

    def descendant_jobs(self, group_id: str, bad: list[BadDocument] | None = None) -> list[Info]:
        """Every job under a group, nested groups included, oldest first.

        Bad documents (and ``:jobs`` keys of the wrong type) are skipped and reported as ``get_many`` does.
        """
        jobs: list[Info] = []
        pending, seen = [group_id], {group_id}
        while pending:
            child_ids = sorted(self._children_reporting(pending.pop(), bad) - seen)
            seen.update(child_ids)
            for info in self.get_many(child_ids, bad):
                if info["type"] == "group":
                    pending.append(info["id"])
                else:
                    jobs.append(info)
        return sorted(jobs, key=lambda info: info["date_created"])

    def _children_reporting(self, group_id: str, bad: list[BadDocument] | None) -> set[str]:
        try:
            return self.children(group_id)
        except BadDocument as error:
            _report(error, bad)
            return set()

    # writing -------------------------------------------------------------

    def ensure_group(self, key: str) -> str:
        """The id of the group ``key`` names, created if needed.

        A key shaped like a uuid is a group id (that group, or a new top-level group with exactly
        that id when no node has it yet, never a job) and any other string is a user name, which
        goes only through ``user-id-map`` (its group made on first use), so no user name can
        reach a node by that node's id.
        """
        by_id = _is_group_id(key)
        group_id = key if by_id else new_id()
        info = new_info(group_id, UNNAMED_GROUP if by_id else key, "group", self.keys.channel(group_id))
        args = [key, "1" if by_id else "", group_id, dumps(info), self.ttl, self.keys.prefix]
        with reaching(self.url), self.holding((self.keys.user_map, "hash")):
            answer, value = self._ensure_group(keys=[self.keys.user_map], args=args)
        if answer == "ok":
            return str(value)
        if answer == "type":
            raise NotAGroup(key, f"a Redis {value}")
        parse(self.keys.info(key), value, key)  # a bad document says what is wrong with it
        raise NotAGroup(key, "a job")

    def group_id(self, key: str) -> str:
        """``ensure_group``, remembered for GROUP_CACHE_SECONDS: submitting saves a round trip.

        Safe because the queue's ``enqueue`` refuses a group that is gone, and looks again.
        """
        hit = self._groups.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        group_id = self.ensure_group(key)
        self._groups[key] = (group_id, time.monotonic() + GROUP_CACHE_SECONDS)
        return group_id

    def owner_of(self, group_id: str) -> str:
        """The top group of the tree ``group_id`` is in: its user's group."""
        return self.chain_of(group_id)[-1]

    def chain_of(self, group_id: str) -> list[str]:
        """``group_id`` and the groups above it, up to its tree's top; remembered like ``group_id``."""
        hit = self._chains.get(group_id)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        chain = [group_id]
        info = self.find(group_id)
        while info is not None and isinstance(info.get("parent"), str) and info["parent"] not in chain:
            chain.append(info["parent"])
            info = self.find(chain[-1])
        self._chains[group_id] = (chain, time.monotonic() + GROUP_CACHE_SECONDS)
        return chain

    def forget_group(self, key: str) -> None:
        """Drop the remembered group id of ``key`` (its group was removed)."""
        self._groups.pop(key, None)

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
    ) -> Info:
        """Apply ``change`` atomically; it returns the new info, or None for no change.

        ``known`` is the caller's last copy; when it is current, this is one
        round trip. ``also``: Redis commands run in the same atomic step, if
        (and only if) the change is written. ``unless_in``: a set; while the
        node is in it, nothing is written. Returns the info as it now stands.
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
            with reaching(self.url):
                if unless_in is None:
                    outcome = self._cas(keys=[self.keys.info(node_id)], args=args)
                else:
                    outcome = self._cas_unless(keys=[self.keys.info(node_id), unless_in], args=[node_id, *args])
            if outcome == 1:
                return changed
            if outcome == 0:
                return info  # refused: the node is in ``unless_in``
            if outcome == -1:
                raise UnknownId(node_id)
            info = parse(self.keys.info(node_id), outcome, node_id)  # someone else changed it: merge again

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
        ``old_statuses``: each document's status before, so a job's end is counted (``moi.storage.tally``).
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
        and is counted for /metrics (``moi.storage.tally``); a service job's due indexes and mails (see
        ``moi.storage.retention``; ``old``: the state it changes)."""
        commands = retention.state_commands(self.keys, node_id, new, old)
        commands += tally.ending_commands(self.keys, new, old.get("status") if old is not None else old_status)
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
            _report(error, None)
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
