"""Users and their groups: the group a user name or a group id names, made on first use, and remembered.

A user's jobs live under their group, a top-level node found through ``user-id-map`` (user
name -> group id, and back). A key shaped like a uuid is a group id, any other string a
user name, so no user name can reach a node by that node's id. ``Groups`` is the part of
``moi.storage.store.Store`` that keeps this map.
"""

from __future__ import annotations

import time
import uuid

import redis

from moi.core.errors import InvalidId, NotAGroup
from moi.core.info import dumps, new_id, new_info, parse
from moi.core.keys import Keys, _looks_like_id
from moi.core.lua import ENSURE_GROUP
from moi.storage.redis_errors import reaching
from moi.storage.tree import Tree

# How long a process trusts its user -> group id lookup (the group's TTL is weeks).
GROUP_CACHE_SECONDS = 5.0

# The name of a group created by id (submit to a uuid nobody used yet), as the original moi named it.
UNNAMED_GROUP = "unnamed"


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


class Groups(Tree):
    """The tree, with its users' groups found, made, and remembered for GROUP_CACHE_SECONDS."""

    def __init__(self, client: redis.Redis[str], keys: Keys, ttl: int, url: str = "") -> None:
        super().__init__(client, keys, ttl, url)
        self._ensure_group = client.register_script(ENSURE_GROUP)
        self._groups: dict[str, tuple[str, float]] = {}  # key -> (group id, good until)
        self._chains: dict[str, tuple[list[str], float]] = {}  # group id -> (it and its ancestors, good until)

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

    def _mapped(self, user: str) -> str | None:
        with reaching(self.url), self.holding((self.keys.user_map, "hash")):
            return self.redis.hget(self.keys.user_map, user)

    def users(self) -> dict[str, str]:
        """user name -> group id, for users whose group still exists."""
        with reaching(self.url), self.holding((self.keys.user_map, "hash")):
            mapping = self.redis.hgetall(self.keys.user_map)
        # The map also holds group id -> user name; by the rule of ensure_group no user name looks like an id.
        names = {user: gid for user, gid in mapping.items() if not _looks_like_id(user)}
        alive = {info["id"] for info in self.get_many(sorted(set(names.values()))) if info["type"] == "group"}
        return {user: gid for user, gid in names.items() if gid in alive}

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
