"""The names applications written for the original moi import, on moi's own store.

``moi.group`` re-exports ``get_id_from_user``, ``get_user_from_id`` and
``create_info`` (where the original kept them); ``moi`` and ``moi.job``
re-export ``ctxs``. Everything connects on first use, as the rest of moi does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from moi.compute.context import Context
from moi.core import values
from moi.core.errors import IdTaken, InvalidId, InvalidUserName, NotAGroup, UnknownKey
from moi.core.info import Info, is_uuid, new_id, new_info
from moi.core.keys import _looks_like_id
from moi.jobs import connections

KINDS = ("group", "job")


class Contexts(Mapping[str, Context]):
    """Context name -> context, for every configured context; each connects when first used."""

    def __getitem__(self, name: str) -> Context:
        return connections.get_context(name)  # UnknownContext for a name not configured

    def __iter__(self) -> Iterator[str]:
        return iter(connections.context_specs())

    def __len__(self) -> int:
        return len(connections.context_specs())

    def __repr__(self) -> str:
        return "<moi.ctxs (contexts connect on first use)>"


ctxs = Contexts()


def get_id_from_user(user: str) -> str:
    """The id of ``user``'s group; the group and both ``user-id-map`` entries are made on first use."""
    user = str(user)
    if _looks_like_id(user):
        # A uuid-shaped name would be taken for a group id: it could reach someone else's group.
        raise InvalidUserName(user, "it looks like a job or group id")
    return connections.store().ensure_group(user)


def get_user_from_id(group_id: str) -> str | None:
    """The user whose group ``group_id`` is, or None."""
    store = connections.store()
    user = store.redis.hget(store.keys.user_map, group_id) if is_uuid(group_id) else None
    return user if user is not None and store.redis.hget(store.keys.user_map, user) == group_id else None


def create_info(
    name: Any,
    info_type: str,
    url: str | None = None,
    parent: str | None = None,
    id: str | None = None,  # the original's keyword, though it shadows the builtin
    context: str | None = None,
    store: bool = False,
) -> Info:
    """An info object with every field, as the original made them; stored too when ``store``.

    Stored, a node is added to ``parent``'s children (``<parent>:jobs``) and announced on
    its channel, with moi's expiry, so the relay follows it, and cancel and remove reach it.
    ``parent`` must then be the id of a group that exists (UnknownKey, NotAGroup otherwise),
    and ``id`` one no node has yet (IdTaken otherwise): storing never overwrites a node.
    """
    if info_type not in KINDS:
        raise ValueError(f"info_type must be 'group' or 'job', not {info_type!r}")
    node_id = new_id() if id is None else str(id)
    if not is_uuid(node_id) or node_id != node_id.lower():
        raise InvalidId(node_id)
    moi_store = connections.store()
    context = context if context is not None else connections.settings().default_context
    info = new_info(
        node_id, str(name), info_type, moi_store.keys.channel(node_id), parent=parent, url=url, context=context
    )
    if store:
        values.check_line(info["name"], "the name")  # stored, it is read by Redis's Lua (see moi.core.values)
        values.check_line(url, "the url")
        _store(info)
    return info


def _store(info: Info) -> None:
    moi_store = connections.store()
    if moi_store.find(info["id"]) is not None:
        raise IdTaken(info["id"])
    parent = info["parent"]
    if parent is None:
        moi_store.put_top_level(info)
        return
    found = moi_store.find(parent) if is_uuid(parent) else None
    if found is None:
        raise UnknownKey(parent)
    if found["type"] != "group":
        raise NotAGroup(parent, "a job")
    if not moi_store.add_under(parent, [info]):
        raise UnknownKey(parent)  # removed meanwhile
