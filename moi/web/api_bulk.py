"""Bulk actions on jobs: cancel, relaunch or delete every job a search finds, in two steps.

    POST /api/v1/jobs/bulk/preview   {"action", the listing's filters: status, service, group, since, until,
                                      name, q, user; and a cursor}: the ids the action will touch, newest first,
                                      at most CAP; their count, how many the action fits now, whether more
                                      match, and the cursor of the next ones
    POST /api/v1/jobs/bulk/{action}  {"ids": [...]} (from the preview): acts on those ids and no others;
                                      how many were done, and how many skipped and why

The preview is a snapshot: the action takes its ids, so it touches exactly the jobs counted, even when
jobs matching the search came or went since (a search acted on as it stands at the click would count one
set and act on another; Temporal's bulk-terminate bug #2602). More than CAP matching: the newest CAP, and
``more`` says so; ``next`` (the listing's cursor) previews the ones after them. A preview reads at most
``listing.SCAN_PAGES`` x CAP index entries, so ``next`` may also be where it stopped looking (``more`` false).

A user acts only on their own jobs, an admin on anyone's: each id is checked (its owner, by the groups above
it) when acted on, and one that is not the user's is skipped as "not found", as the API answers it elsewhere.
One bulk action per user at a time, and one preview (409 while one runs): a request that does a thousand
things (or reads a thousand index pages) holds one of the server's worker threads while it does, and a user
holds at most one of each that way.
Cost: a preview reads at most ``listing.SCAN_PAGES`` x CAP index entries; an action, the CAP documents
(one MGET) and the groups above them, then one action per job.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from moi.core.errors import MoiError
from moi.core.info import Info, is_finished, is_uuid
from moi.jobfiles import removal
from moi.jobs import submit as jobs
from moi.jobs.cancel import cancel
from moi.relay.node_removal import remove_nodes
from moi.relay.websocket import hub_for
from moi.storage.store import Store
from moi.web import job_search
from moi.web.api_handler import PREFIX, APIHandler, Problem, problem_of
from moi.web.api_submission import submitted

CAP = 1000  # jobs one action touches
ACTIONS = ("cancel", "relaunch", "delete")
GONE = "not found"
RUNNING: set[str] = set()  # the users whose bulk action runs now (this process's)
PREVIEWING: set[str] = set()  # the users whose bulk preview runs now (this process's)


@contextlib.contextmanager
def one_at_a_time(running: set[str], user: str, what: str) -> Iterator[None]:
    """The block, while no other of ``user``'s ``what`` runs in this process; else 409."""
    if user in running:
        raise Problem(409, "conflict", f"a {what} of yours is still running: wait for its answer")
    running.add(user)
    try:
        yield
    finally:
        running.discard(user)


def fits(action: str, info: Info) -> bool:
    """Whether the action fits the job's state: cancel an unfinished job, relaunch a finished one, delete any."""
    return action == "delete" or (action == "cancel") != is_finished(info)


def _action_of(given: dict[str, Any]) -> str:
    action = given.get("action")
    if action not in ACTIONS:
        raise Problem(422, "invalid", f'"action" is one of {", ".join(ACTIONS)}')
    return str(action)


class BulkPreviewHandler(APIHandler):
    async def post(self) -> None:
        """The jobs a bulk action would touch: the ids (at most 1,000, newest first), their count, and more.
        ---
        requestBody:
          content:
            application/json:
              schema: {$ref: "#/components/schemas/BulkPreview"}
        responses:
          200: {description: "{action, ids, count, applicable, more, next, cap}"}
          403: {description: naming another user without being an admin}
          422: {description: a bad action or filter}
        """
        given = submitted(self.request, self.json_limit())
        action = _action_of(given)
        cursor = given.get("cursor")
        if cursor is not None and (type(cursor) is not int or not 0 <= cursor <= 2**62):
            raise Problem(422, "invalid", '"cursor" is a whole number from 0 to 2**62 (a preview\'s "next")')
        search = await job_search.search_of(self, given.get)
        with one_at_a_time(PREVIEWING, str(self.current_user), "bulk preview"):
            chosen, after = await self.run(job_search.page, self.store, search, CAP, cursor)
            more, after = await self.run(_more_after, self.store, search, after)
        self.answer(
            {
                "action": action,
                "ids": [info["id"] for info in chosen],
                "count": len(chosen),
                "applicable": sum(fits(action, info) for info in chosen),
                "more": more,
                "next": after,
                "cap": CAP,
            }
        )


class BulkActionHandler(APIHandler):
    async def post(self, action: str) -> None:
        """Cancel, relaunch or delete the jobs of these ids (a preview's): how many done, how many skipped, why.
        ---
        requestBody:
          content:
            application/json:
              schema: {$ref: "#/components/schemas/BulkIds"}
        responses:
          200: {description: "{action, done, skipped, reasons: {why: how many}}"}
          409: {description: a bulk action of the user's is still running}
          422: {description: "ids not a list of at most 1,000 job ids"}
        """
        ids = _ids_of(submitted(self.request, self.json_limit()))
        with one_at_a_time(RUNNING, str(self.current_user), "bulk action"):
            await self._act(action, ids)

    async def _act(self, action: str, ids: list[str]) -> None:
        store = self.store
        mine = None if self.admin else await self.my_group()
        infos = await self.run(_owned, store, ids, mine)
        reasons: Counter[str] = Counter({GONE: len(ids) - len(infos)}) if len(ids) > len(infos) else Counter()
        if action == "delete":
            done = await self._delete(store, infos, reasons)
        else:
            granted = await self.may_run_code()
            done = await self.run(_act, store, action, infos, reasons, granted)
        self.answer({"action": action, "done": done, "skipped": sum(reasons.values()), "reasons": dict(reasons)})

    async def _delete(self, store: Store, infos: list[Info], reasons: Counter[str]) -> int:
        await self.run(_act, store, "cancel", [info for info in infos if not is_finished(info)], Counter(), False)
        hub = hub_for(self.application)
        ids = [info["id"] for info in infos]
        try:
            removed = set(await remove_nodes(hub.redis, hub.keys, ids)) if ids else set()
        except MoiError as error:
            raise problem_of(error) from None
        await self.run(removal.remove_directories, [i for i in ids if i in removed], {i["id"]: i for i in infos})
        if len(ids) > len(removed & set(ids)):
            reasons[GONE] += len(ids) - len(removed & set(ids))
        return len(removed & set(ids))


def _more_after(store: Store, search: job_search.Search, after: int | None) -> tuple[bool, int | None]:
    """Whether a job older than ``after`` matches (a look at one batch of the index), and the cursor to go on
    from: None when the index holds nothing older that was not looked at."""
    if after is None:
        return False, None
    found, beyond = job_search.page(store, search, 1, after)
    return bool(found), after if found or beyond is not None else None


def _ids_of(given: dict[str, Any]) -> list[str]:
    ids = given.get("ids")
    if not isinstance(ids, list) or len(ids) > CAP or not all(isinstance(i, str) and is_uuid(i) for i in ids):
        raise Problem(422, "invalid", f'"ids" is a list of at most {CAP} job ids (a preview\'s)')
    return list(dict.fromkeys(ids))  # each once, in the order given


def _owned(store: Store, ids: list[str], mine: str | None) -> list[Info]:
    """The jobs of these ids that exist and are the user's (``mine``: their group; None: an admin's, any)."""
    found = [info for info in store.get_many(ids) if info.get("type") == "job"]
    if mine is None:
        return found
    return [info for info in found if isinstance(info.get("parent"), str) and store.owner_of(info["parent"]) == mine]


def _act(store: Store, action: str, infos: list[Info], reasons: Counter[str], granted: bool) -> int:
    """Cancel or relaunch each job the action fits; the rest counted in ``reasons``. How many were done."""
    done = 0
    for info in infos:
        if not fits(action, info):
            reasons["already finished" if action == "cancel" else "not finished"] += 1
            continue
        try:
            if action == "cancel":
                report = cancel(info["id"], store)
                if not (report.cancelled or report.requested):
                    reasons["already finished"] += 1
                    continue
            else:
                jobs.relaunch(info["id"], store, granted)
        except MoiError as error:
            reasons[problem_of(error).code] += 1
            continue
        done += 1
    return done


ROUTES = [
    (rf"{PREFIX}/jobs/bulk/preview", BulkPreviewHandler),
    (rf"{PREFIX}/jobs/bulk/(cancel|relaunch|delete)", BulkActionHandler),
]
