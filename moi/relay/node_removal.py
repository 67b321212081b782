"""Removing nodes from Redis, and announcing it: the one place that does (async).

The relay's ``remove`` verb and the API's ``DELETE`` both come here; every ``Group``
following a removed node hears it on pub/sub and forwards ``remove``.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from moi.core.info import parse
from moi.core.keys import Keys
from moi.jobfiles import removal
from moi.storage.store import message

log = logging.getLogger("moi.group")


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
        await asyncio.get_running_loop().run_in_executor(None, removal.remove_directories, removed, moved)
    log.info("removed %d nodes", len(removed))
    return removed
