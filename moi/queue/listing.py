"""Listing jobs newest first, filtered, a page at a time, from the index ENQUEUE keeps.

Every submitted job's id goes into its owner's index (``moi:index:<owner>``) and
everyone's (``moi:index``), scored by its order of submission, in the same atomic
step that stores it. A page reads the index backwards from its cursor (the score
after which it goes on) and the documents of those ids in one MGET per batch;
filters apply to those documents. A page reads at most ``SCAN_PAGES`` times its
size: a rare filter answers fewer jobs and a cursor rather than scanning on.
Ids whose document is gone (expired, removed) are dropped from the index as met.

Each job listed carries ``user``, its owner's name: one HMGET of ``user-id-map`` per batch, for the
owners met in it. So a page costs at most ``SCAN_PAGES`` batches of three round trips (ZREVRANGEBYSCORE,
MGET, HMGET), whatever the index's size; a search of the whole history is the client following ``next``.
"""

from __future__ import annotations

from dataclasses import dataclass

from moi.core.errors import BadDocument
from moi.core.info import Info, Status, is_uuid, parse
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

SCAN_PAGES = 10
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    service: str | None = None
    group: str | None = None  # the job's direct group
    since: str | None = None  # date_created at or after (the seed's timestamp format, or a prefix of it)
    until: str | None = None  # date_created before
    name: str | None = None  # name contains, case-insensitively
    text: str | None = None  # a search: in the name, user, service or status, or the start of the id

    def match(self, info: Info) -> bool:
        created = str(info.get("date_created", ""))
        return (
            (self.status is None or phase(info) == self.status)
            and (self.service is None or info.get("service") == self.service or self._serviceless(info))
            and (self.group is None or info.get("parent") == self.group)
            and (self.since is None or created >= self.since)
            and (self.until is None or created < self.until)
            and (self.name is None or self.name.lower() in str(info.get("name", "")).lower())
            and (self.text is None or searched(info, self.text))
        )

    def _serviceless(self, info: Info) -> bool:
        return self.service == "-" and not info.get("service")  # "-": jobs of no service (plain code)


def phase(info: Info) -> str:
    """The state a job is in: a running job's status may be its own text (``status_update``), "Running" here."""
    status = str(info.get("status", ""))
    return status if status in Status.__members__.values() else "Running"


def searched(info: Info, text: str) -> bool:
    """``text`` is in the job's name, user, service or status (case-insensitively), or starts its id."""
    wanted = text.lower()
    fields = (info.get("name"), info.get("user"), info.get("service"), info.get("status"))
    return str(info.get("id", "")).startswith(wanted) or any(wanted in str(value or "").lower() for value in fields)


def page(store: Store, index: str, filters: Filters, limit: int, cursor: int | None) -> tuple[list[Info], int | None]:
    """Up to ``limit`` jobs of the index, newest first, after ``cursor``; and the cursor of the next page."""
    found: list[Info] = []
    top = f"({cursor}" if cursor is not None else "+inf"
    batch, scanned = max(limit, 100), 0
    while len(found) < limit and scanned < SCAN_PAGES * limit:
        with reaching(store.url):
            entries = store.redis.zrevrangebyscore(index, top, "-inf", start=0, num=batch, withscores=True)
        if not entries:
            return found, None
        exhausted = len(entries) < batch  # the index's oldest entry is in this batch: no page after this one
        scanned += len(entries)
        with reaching(store.url):
            raws = store.redis.mget([store.keys.info(job_id) for job_id, _ in entries])
        infos = named(store, [_parsed(store, job_id, raw) for (job_id, _), raw in zip(entries, raws, strict=True)])
        gone = []
        for (job_id, score), info in zip(entries, infos, strict=True):
            top = f"({int(score)}"
            if info is None:
                gone.append(job_id)
            elif filters.match(info):
                found.append(info)
                if len(found) == limit:
                    return found, int(score)
        if gone:
            with reaching(store.url):
                store.redis.zrem(index, *gone)
        if exhausted:
            return found, None
    return found, int(top[1:])


def named(store: Store, infos: list[Info | None]) -> list[Info | None]:
    """The jobs, each with ``user``: its owner's name (one HMGET for the owners met), or its owner's id."""
    owners = sorted({str(info["owner"]) for info in infos if info is not None and info.get("owner")})
    names: dict[str, str | None] = {}
    if owners:
        with reaching(store.url):
            names = dict(zip(owners, store.redis.hmget(store.keys.user_map, owners), strict=True))
    for info in infos:
        if info is not None:
            owner = info.get("owner")
            info["user"] = names.get(str(owner)) or owner if owner else None
    return infos


def _parsed(store: Store, job_id: str, raw: str | None) -> Info | None:
    if raw is None:
        return None
    try:
        return parse(store.keys.info(job_id), raw, job_id)
    except BadDocument:
        return None


PRUNED = 200  # oldest entries of each index looked at per prune


def prune(store: Store) -> int:
    """Drop the oldest index entries whose job is gone (expired by Redis): a listing never pages that far
    back often, so the sweeper does it. How many were dropped."""
    with reaching(store.url):
        owners = {value for value in store.redis.hvals(store.keys.user_map) if is_uuid(value)}  # group ids
    dropped = 0
    for index in [store.keys.index_all, *(store.keys.index(owner) for owner in sorted(owners))]:
        with reaching(store.url):
            oldest = store.redis.zrange(index, 0, PRUNED - 1)
            if not oldest:
                continue
            present = store.redis.mget([store.keys.info(job_id) for job_id in oldest])
            gone = [job_id for job_id, raw in zip(oldest, present, strict=True) if raw is None]
            if gone:
                dropped += int(store.redis.zrem(index, *gone))
    return dropped
