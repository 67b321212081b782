"""Reading the group/job tree in Redis: a node's info object, a group's children, every job under a group.

Each node's info object is a JSON string, a group's children a set of ids (``moi.core.keys``
names their keys). A key that holds something else is named in a BadDocument, and a listing
skips it rather than failing for the others.
``Tree`` is the reading half of ``moi.storage.store.Store``; the writes are there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from moi.core.errors import BadDocument, UnknownId
from moi.core.info import Info, parse
from moi.core.keys import Keys
from moi.storage.redis_errors import reaching

log = logging.getLogger("moi.store")

# What each Redis type moi uses holds, for a message about a key holding something else.
_HOLDS = {"string": "a JSON info object", "set": "a set of ids", "hash": "a hash"}


def report_bad(error: BadDocument, bad: list[BadDocument] | None) -> None:
    """A bad document skipped in a listing: to the caller's list, or to the log when it keeps none."""
    if bad is None:
        log.warning("skipped: %s", error)  # the message escapes the key (moi.core.redact.printable)
    else:
        bad.append(error)


class Tree:
    """The nodes of the tree, read: ``client`` reaches the Redis at ``url``, ``keys`` names its keys.

    ``ttl``: how long a write keeps what it stores (the writes are ``Store``'s).
    """

    def __init__(self, client: redis.Redis[str], keys: Keys, ttl: int, url: str = "") -> None:
        self.redis = client
        self.keys = keys
        self.ttl = ttl
        self.url = url

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
                report_bad(error, bad)
        return infos

    def children(self, group_id: str) -> set[str]:
        key = self.keys.children(group_id)
        with reaching(self.url), self.holding((key, "set")):
            return set(self.redis.smembers(key))

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
            report_bad(error, bad)
            return set()

    def held(self, key: str) -> str | None:
        """What a key given by a user holds in Redis, for a message (``a Redis hash``); None if nothing."""
        kind = self._type_of(self.keys.info(key))
        return None if kind == "none" else f"a Redis {kind}"

    def _type_of(self, key: str) -> str:
        with reaching(self.url):
            return str(self.redis.execute_command("TYPE", key))

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
