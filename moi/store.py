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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from .errors import RedisUnavailable, UnknownId, UnknownKey
from .info import Info, dumps, new_id, new_info
from .keys import Keys

log = logging.getLogger("moi.store")

# How long a process trusts its user -> group id lookup (the group's TTL is weeks).
GROUP_CACHE_SECONDS = 5.0

# A change to an info object: the new info, or None for no change.
Change = Callable[[Info], "Info | None"]

# Set the info object only if nobody changed it since we read it.
# Returns 1 (set and published), -1 (no such node) or the current document.
# ARGV[6:] are optional commands that go with the change (and only with it), each
# as its length then its words: an engine's heartbeat registration rides along.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if cjson.decode(current)['revision'] ~= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
local i = 6
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""

# The compare-and-set above for many nodes in one call (a batch of jobs on one engine).
# KEYS: info keys.  ARGV: ttl, then per key: revision, document, channel, message.
# Returns per key what _COMPARE_AND_SET returns; a key may come more than once.
_COMPARE_AND_SET_MANY = """
local ttl = ARGV[1]
local out, lost = {}, {}
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local current = redis.call('GET', key)
  if not current then
    out[i] = -1
  elseif lost[key] or cjson.decode(current)['revision'] ~= tonumber(ARGV[at]) then
    lost[key] = true  -- a later change of this node was built on the lost one
    out[i] = current
  else
    redis.call('SET', key, ARGV[at + 1], 'EX', ttl)
    redis.call('PUBLISH', ARGV[at + 2], ARGV[at + 3])
    out[i] = 1
  end
end
local i = 2 + #KEYS * 4  -- then commands that go along, as in _COMPARE_AND_SET
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return out
"""

# New jobs stored under a group, indexed as queued and announced, in one call; 0 if the group is gone.
# KEYS: group info, group children, queued index.
# ARGV: ttl, group channel, add message, queued entry ('' for none), key prefix, then id, document pairs.
_ADD_JOBS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl, entry, prefix = ARGV[1], ARGV[4], ARGV[5]
for i = 6, #ARGV, 2 do
  redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'EX', ttl)
  redis.call('SADD', KEYS[2], ARGV[i])
  if entry ~= '' then redis.call('HSET', KEYS[3], ARGV[i], entry) end
end
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# The group of a user (or an existing group id), created when missing or expired.
# KEYS: user map.  ARGV: key, new group id, new group info, ttl, key prefix.
_ENSURE_GROUP = """
local prefix = ARGV[5]
local gid = nil
-- A group id first: the map also holds group id -> user name, which is not a group.
local own = redis.call('GET', prefix .. ARGV[1])
if own and cjson.decode(own)['type'] == 'group' then gid = ARGV[1] end
if not gid then gid = redis.call('HGET', KEYS[1], ARGV[1]) end
if gid and redis.call('EXISTS', prefix .. gid) == 1 then
  redis.call('EXPIRE', prefix .. gid, ARGV[4])
  return gid
end
redis.call('SET', prefix .. ARGV[2], ARGV[3], 'EX', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return ARGV[2]
"""


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn a lost Redis connection into a one-line RedisUnavailable."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RedisUnavailable(url, _first_line(error)) from error


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
        self._cas = client.register_script(_COMPARE_AND_SET)
        self._ensure_group = client.register_script(_ENSURE_GROUP)
        self._cas_many = client.register_script(_COMPARE_AND_SET_MANY)
        self._add_jobs = client.register_script(_ADD_JOBS)
        self._groups: dict[str, tuple[str, float]] = {}  # key -> (group id, good until)

    # reading -------------------------------------------------------------

    def get(self, node_id: str) -> Info:
        info = self.find(node_id)
        if info is None:
            raise UnknownId(node_id)
        return info

    def find(self, node_id: str) -> Info | None:
        with reaching(self.url):
            raw = self.redis.get(self.keys.info(node_id))
        return json.loads(raw) if raw else None

    def get_many(self, node_ids: Iterable[str]) -> list[Info]:
        """The info objects that still exist, in the order asked."""
        keys = [self.keys.info(node_id) for node_id in node_ids]
        if not keys:
            return []
        with reaching(self.url):
            raws = self.redis.mget(keys)
        return [json.loads(raw) for raw in raws if raw]

    def children(self, group_id: str) -> set[str]:
        with reaching(self.url):
            return set(self.redis.smembers(self.keys.children(group_id)))

    def group_of_user(self, key: str) -> str | None:
        """The group id for a user name, or the key itself if it is a group id."""
        for candidate in (key, self._mapped(key)):  # the map also holds group id -> user name
            info = self.find(candidate) if candidate else None
            if info is not None and info.get("type") == "group":
                return candidate
        return None

    def _mapped(self, user: str) -> str | None:
        with reaching(self.url):
            return self.redis.hget(self.keys.user_map, user)

    def users(self) -> dict[str, str]:
        """user name -> group id, for users whose group still exists."""
        with reaching(self.url):
            mapping = self.redis.hgetall(self.keys.user_map)
        groups = {gid for gid in mapping.values()}
        alive = {info["id"] for info in self.get_many(sorted(groups)) if info.get("type") == "group"}
        return {user: gid for user, gid in mapping.items() if gid in alive and user not in alive}

    def descendant_jobs(self, group_id: str) -> list[Info]:
        """Every job under a group, nested groups included, oldest first."""
        jobs: list[Info] = []
        pending, seen = [group_id], {group_id}
        while pending:
            child_ids = sorted(self.children(pending.pop()) - seen)
            seen.update(child_ids)
            for info in self.get_many(child_ids):
                if info.get("type") == "group":
                    pending.append(info["id"])
                else:
                    jobs.append(info)
        return sorted(jobs, key=lambda info: info.get("date_created") or "")

    # writing -------------------------------------------------------------

    def ensure_group(self, key: str) -> str:
        """The id of the group for a user name or group id, created if needed."""
        gid = new_id()
        info = new_info(gid, key, "group", self.keys.channel(gid))
        with reaching(self.url):
            return str(
                self._ensure_group(
                    keys=[self.keys.user_map],
                    args=[key, gid, dumps(info), self.ttl, self.keys.prefix],
                )
            )

    def group_id(self, key: str) -> str:
        """``ensure_group``, remembered for GROUP_CACHE_SECONDS: submitting saves a round trip.

        Safe because ``add_jobs`` refuses a group that is gone (see ``add_queued``).
        """
        hit = self._groups.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        group_id = self.ensure_group(key)
        self._groups[key] = (group_id, time.monotonic() + GROUP_CACHE_SECONDS)
        return group_id

    def add_queued(self, group: str, infos: list[Info], queued_entry: str = "") -> str:
        """Store new jobs as children of a user's group (made if needed); the group id.

        One round trip while the group id is remembered; sets each job's ``parent``.
        """
        for _ in range(2):
            group_id = self.group_id(group)
            for info in infos:
                info["parent"] = group_id
            if self.add_jobs(group_id, infos, queued_entry):
                return group_id
            self._groups.pop(group, None)  # removed meanwhile: look it up (or make it) again
        raise UnknownKey(group)

    def add_jobs(self, group_id: str, infos: list[Info], queued_entry: str = "") -> bool:
        """Store new jobs under a group, note them in the queued index and announce them: one round trip.

        False (nothing written) if the group no longer exists.
        """
        args: list[Any] = [
            self.ttl,
            self.keys.channel(group_id),
            message("add", [info["id"] for info in infos]),
            queued_entry,
            self.keys.prefix,
        ]
        for info in infos:
            args += [info["id"], dumps(info)]
        keys = [self.keys.info(group_id), self.keys.children(group_id), self.keys.queued]
        with reaching(self.url):
            return bool(self._add_jobs(keys=keys, args=args))

    def create_group(self, name: str, parent: str | None = None) -> str:
        """A new (sub)group; under ``parent`` when given, announced there."""
        gid = new_id()
        info = new_info(gid, name, "group", self.keys.channel(gid), parent=parent)
        self.add_nodes(parent, [info]) if parent else self._set(info)
        return gid

    def _set(self, info: Info) -> None:
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
        with reaching(self.url):
            pipe.execute()

    def update(
        self,
        node_id: str,
        change: Callable[[Info], Info | None],
        known: Info | None = None,
        also: Sequence[Sequence[str | int]] = (),
    ) -> Info:
        """Apply ``change`` atomically; it returns the new info, or None for no change.

        ``known`` is the caller's last copy; when it is current, this is one
        round trip. ``also``: Redis commands run in the same atomic step, if
        (and only if) the change is written. Returns the info as it now stands.
        """
        info = known if known is not None else self.get(node_id)
        extra = _command_words(also)
        while True:
            changed = change(dict(info))
            if changed is None:
                return info
            changed["revision"] = info["revision"] + 1
            with reaching(self.url):
                outcome = self._cas(
                    keys=[self.keys.info(node_id)],
                    args=[
                        info["revision"],
                        dumps(changed),
                        self.ttl,
                        self.keys.channel(node_id),
                        message("update", [node_id]),
                        *extra,
                    ],
                )
            if outcome == 1:
                return changed
            if outcome == -1:
                raise UnknownId(node_id)
            info = json.loads(outcome)  # someone else changed it: merge again

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
            answers = self.write_many([(node_id, new) for node_id, _, new in writes], extra)
            extra = []  # once is enough
            pending = self._settle(writes, answers, outcome, gone)
        return outcome

    def write_many(self, writes: list[tuple[str, Info]], also: Sequence[Sequence[str | int]] = ()) -> list[Any]:
        """One compare-and-set call for changed documents (``revision`` already bumped), each published.

        Per document: 1 (written), -1 (no such node) or the current document (changed meanwhile).
        ``update_many`` is the usual way in; this is its single round trip.
        """
        args: list[Any] = [self.ttl]
        for node_id, new in writes:
            args += [new["revision"] - 1, dumps(new), self.keys.channel(node_id), message("update", [node_id])]
        args += _command_words(also)
        with reaching(self.url):
            return list(self._cas_many(keys=[self.keys.info(node_id) for node_id, _ in writes], args=args))

    @staticmethod
    def _writes(pending: list[tuple[str, Change, Info]], outcome: dict[str, Info]) -> list[tuple[str, Change, Info]]:
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
            writes.append((node_id, change, changed))
        return writes

    @staticmethod
    def _settle(
        writes: list[tuple[str, Change, Info]], answers: list[Any], outcome: dict[str, Info], gone: set[str]
    ) -> list[tuple[str, Change, Info]]:
        """Record what was written; what lost a race is retried from the current copy."""
        retry = []
        for (node_id, change, new), answer in zip(writes, answers, strict=True):
            if answer == 1:
                outcome[node_id] = new
            elif answer == -1:
                gone.add(node_id)
                outcome.pop(node_id, None)
            else:
                retry.append((node_id, change, json.loads(answer)))  # changed meanwhile: merge again
        return [entry for entry in retry if entry[0] not in gone]

    def publish(self, node_id: str, action: str, ids: Iterable[str]) -> None:
        with reaching(self.url):
            self.redis.publish(self.keys.channel(node_id), message(action, ids))


def _command_words(commands: Sequence[Sequence[str | int]]) -> list[str | int]:
    """Commands that ride along with a compare-and-set, as the scripts read them: length, then words."""
    return [word for command in commands for word in (len(command), *command)]


@functools.lru_cache(maxsize=8)
def store_for(url: str, prefix: str, ttl: int) -> Store:
    """One Store (and connection pool) per Redis URL, per process; engines use this."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30)
    return Store(client, Keys(prefix), ttl, url)


def set_fields(**fields: Any) -> Callable[[Info], Info]:
    def change(info: Info) -> Info:
        info.update(fields)
        return info

    return change
