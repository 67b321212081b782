"""What a listing of jobs searches, read from a request: the index (a user's own, one user's for an admin who
names one, everyone's for an admin) and the filters. The listing (``GET /api/v1/jobs``) and the bulk actions'
preview (``moi.web.api_bulk``) search the same way, so a preview counts what the list shows.

A non-admin searches only their own index: ``user`` naming anyone else is refused (403), and no other
parameter reaches another index. A job's full id as ``q`` is looked up directly (one GET), past any page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moi.core.info import Info, is_uuid
from moi.core.keys import user_name_problem
from moi.queue import listing
from moi.relay.websocket import hub_for
from moi.storage.redis_errors import reaching
from moi.storage.store import Store
from moi.web.api_handler import APIHandler, Problem

FIELDS = ("status", "service", "group", "since", "until", "name", "q", "user")
TEXT_LIMIT = 200  # characters of one filter's value


@dataclass(frozen=True)
class Search:
    index: str | None  # None: a user who has no jobs (no index to read)
    filters: listing.Filters


async def search_of(handler: APIHandler, given: Callable[[str], Any]) -> Search:
    """The search a request asks for; ``given(name)`` reads one field (a query argument or a JSON key)."""
    values = {name: _text(name, given(name)) for name in FIELDS}
    group = values["group"]
    filters = listing.Filters(
        status=values["status"],
        service=values["service"],
        group=await _own_group(handler, group) if group is not None else None,
        since=values["since"],
        until=values["until"],
        name=values["name"],
        text=values["q"],
    )
    return Search(await _index(handler, values["user"]), filters)


def _text(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > TEXT_LIMIT:
        raise Problem(422, "invalid", f'"{name}" is text of at most {TEXT_LIMIT} characters')
    return value


async def _own_group(handler: APIHandler, group: str) -> str:
    mine = await handler.my_group()
    if not is_uuid(group) or mine not in await handler.run(handler.store.chain_of, group):
        raise Problem(404, "not_found", f"Unknown group id: {group[:80]}")
    return group


async def _index(handler: APIHandler, user: str | None) -> str | None:
    keys = hub_for(handler.application).keys
    if user is None:
        return keys.index_all if handler.admin else keys.index(await handler.my_group())
    if not handler.admin:
        if user != str(handler.current_user):
            raise Problem(403, "forbidden", "listing another user's jobs is for admins")
        return keys.index(await handler.my_group())
    if user_name_problem(user) is not None:
        return None  # no such user can exist: nothing to list
    owner = await handler.run(_owner_of_user, handler.store, user)
    return keys.index(owner) if owner else None


def _owner_of_user(store: Store, user: str) -> str | None:
    with reaching(store.url), store.holding((store.keys.user_map, "hash")):
        return store.redis.hget(store.keys.user_map, user)


def page(store: Store, search: Search, limit: int, cursor: int | None) -> tuple[list[Info], int | None]:
    """A page of the search: by id at once when ``q`` is a whole id, else from the index."""
    if search.index is None:
        return [], None
    text = search.filters.text
    if text is not None and is_uuid(text):
        return (_by_id(store, search, text) if cursor is None else []), None
    return listing.page(store, search.index, search.filters, limit, cursor)


def _by_id(store: Store, search: Search, job_id: str) -> list[Info]:
    """The job of that id, when it is in the index searched (the user's own) and matches the filters."""
    with reaching(store.url):
        score = store.redis.zscore(search.index or "", job_id)
    found = listing.named(store, [store.find(job_id)]) if score is not None else []
    return [info for info in found if info is not None and search.filters.match(info)]
