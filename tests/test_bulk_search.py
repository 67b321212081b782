"""Every user's jobs searched on the server, and bulk actions on a search, through the HTTP API: an admin finds a
user's job past the first 1,000 (by user, by a search following the cursor, by id); each job says its user; a
user reaches no one else's jobs through any parameter; a preview counts exactly the ids the action then takes,
at most 1,000, and says when more match; each action says how many it did and why it skipped the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from moi.job import pause, submit
from moi.jobs.batch import submit_many
from moi.jobs.connections import store as the_store
from moi.web import api_bulk
from tests import jobs
from tests.test_api import call, payload, token_for
from tests.test_relay_security import server

MANY = 1200


def held_jobs() -> tuple[str, list[str]]:
    """carol's one job, then dave's MANY after it (newer), all held by a pause of their users: never run."""
    store = the_store()
    for user in ("carol", "dave"):
        store.ensure_group(user)
        pause(user=user)
    needle, _, _ = submit("default", "carol", "needle in the hay", None, jobs.add, 1, 1)
    hay, _, _ = submit_many("default", "dave", "hay", None, jobs.add, [(index, 1) for index in range(MANY)])
    return needle, hay


async def pages(port: int, token: str, query: str) -> list[dict[str, Any]]:
    """Every job the search finds, following ``next`` (bounded: a page scans at most ten times its size)."""
    found, cursor = [], None
    for _ in range(50):
        answer = payload(
            await call(port, "GET", f"/api/v1/jobs?{query}" + (f"&cursor={cursor}" if cursor else ""), token)
        )
        found += answer["jobs"]
        cursor = answer["next"]
        if cursor is None:
            return found
    raise AssertionError("the search never ended")


def test_an_admin_searches_every_users_whole_history_on_the_server_and_a_user_only_their_own(r) -> None:
    needle, hay = held_jobs()
    ops, carol, dave = token_for("ops", admin=True), token_for("carol"), token_for("dave")

    async def scenario() -> None:
        async with server() as port:
            first = payload(await call(port, "GET", "/api/v1/jobs?limit=1000", ops))
            assert len(first["jobs"]) == 1000 and needle not in {job["id"] for job in first["jobs"]}
            assert {job["user"] for job in first["jobs"]} == {"dave"}  # the user column
            rest = payload(await call(port, "GET", f"/api/v1/jobs?limit=1000&cursor={first['next']}", ops))
            assert rest["jobs"][-1]["id"] == needle and rest["jobs"][-1]["user"] == "carol"

            by_user = payload(await call(port, "GET", "/api/v1/jobs?user=carol", ops))
            assert [job["id"] for job in by_user["jobs"]] == [needle] and by_user["next"] is None
            for query in ("q=NEEDLE", "q=carol", "q=carol&status=Paused", f"q={needle[:8]}"):
                assert [job["id"] for job in await pages(port, ops, query)] == [needle], query
            assert [job["id"] for job in await pages(port, ops, f"q={needle}")] == [needle]  # a whole id: at once
            assert len(await pages(port, ops, "user=dave&status=Paused&limit=1000")) == MANY
            assert payload(await call(port, "GET", "/api/v1/jobs?user=nobody", ops))["jobs"] == []

            # carol: her own jobs, whatever she names
            assert (await call(port, "GET", "/api/v1/jobs?user=dave", carol)).code == 403
            assert [job["id"] for job in await pages(port, carol, "q=hay")] == [needle]  # her "needle in the hay" only
            assert await pages(port, carol, f"q={hay[0]}") == []
            assert [job["id"] for job in await pages(port, carol, "user=carol")] == [needle]
            assert [job["id"] for job in await pages(port, dave, f"q={needle}")] == []
            assert (await call(port, "GET", "/api/v1/jobs?q=" + "x" * 201, carol)).code == 422

    asyncio.run(scenario())


def test_a_bulk_action_acts_on_exactly_the_jobs_its_preview_counted_and_only_on_the_users_own(r) -> None:
    needle, hay = held_jobs()
    ops, carol, dave = token_for("ops", admin=True), token_for("carol"), token_for("dave")
    store = the_store()

    async def post(port: int, path: str, token: str, body: Any) -> Any:
        answer = await call(port, "POST", f"/api/v1/jobs/bulk/{path}", token, body)
        assert answer.code == 200, answer.body
        return payload(answer)

    async def scenario() -> None:
        async with server() as port:
            preview = await post(port, "preview", dave, {"action": "cancel", "status": "Paused"})
            counted = (preview["count"], preview["applicable"], preview["more"], preview["cap"])
            assert counted == (1000, 1000, True, 1000) and preview["next"] is not None
            assert preview["ids"] == list(reversed(hay))[:1000]  # the newest first
            older = await post(
                port, "preview", dave, {"action": "cancel", "status": "Paused", "cursor": preview["next"]}
            )
            assert older["ids"] == list(reversed(hay))[1000:] and (older["more"], older["next"]) == (False, None)
            later, _, _ = submit("default", "dave", "hay, later", None, jobs.add, 1, 1)  # matches, after the preview

            # carol sends dave's ids (and her own): only hers is touched
            theirs = await post(port, "cancel", carol, {"ids": [*preview["ids"][:5], needle]})
            assert (theirs["done"], theirs["skipped"], theirs["reasons"]) == (1, 5, {"not found": 5})
            assert {info["status"] for info in store.get_many(preview["ids"][:5])} == {"Paused"}
            refused = await call(port, "POST", "/api/v1/jobs/bulk/preview", carol, {"action": "delete", "user": "dave"})
            assert refused.code == 403
            with api_bulk.one_at_a_time(api_bulk.PREVIEWING, "dave", "bulk preview"):  # one of dave's runs
                busy = await call(port, "POST", "/api/v1/jobs/bulk/preview", dave, {"action": "cancel"})
            assert busy.code == 409 and "bulk preview of yours is still running" in payload(busy)["error"]

            twice = [call(port, "POST", "/api/v1/jobs/bulk/cancel", dave, {"ids": preview["ids"]}) for _ in range(2)]
            answers = await asyncio.gather(*twice)  # the second waits its turn (409), or finds them cancelled
            assert sorted(answer.code for answer in answers) in ([200, 200], [200, 409]), [a.body for a in answers]
            done = [payload(answer) for answer in answers if answer.code == 200]
            assert sorted(answer["done"] for answer in done)[-1] == 1000 == sum(answer["done"] for answer in done)
            statuses = {info["id"]: info["status"] for info in store.get_many([*hay, later])}
            assert {statuses[job_id] for job_id in preview["ids"]} == {"Cancelled"}
            assert statuses[later] == "Paused" and list(statuses.values()).count("Paused") == MANY - 1000 + 1

            again = await post(port, "cancel", dave, {"ids": preview["ids"][:3]})
            assert (again["done"], again["reasons"]) == (0, {"already finished": 3})
            relaunched = await post(port, "relaunch", dave, {"ids": [*preview["ids"][:2], later]})
            assert (relaunched["done"], relaunched["reasons"]) == (2, {"not finished": 1})  # held again, as dave's

            rest = await post(port, "preview", ops, {"action": "delete", "user": "dave", "status": "Paused"})
            assert (rest["count"], rest["more"], rest["next"]) == (MANY - 1000 + 1 + 2, False, None)
            deleted = await post(port, "delete", ops, {"ids": rest["ids"]})
            assert (deleted["done"], deleted["skipped"]) == (MANY - 1000 + 1 + 2, 0)
            assert store.get_many(rest["ids"]) == [] and store.find(needle) is not None

            bad_previews = [{"action": "explode"}, {"action": "cancel", "q": 7}, {"action": "cancel", "group": "x"}]
            bad_previews += [{"action": "cancel", "cursor": cursor} for cursor in (-1, "1", 1.5, True, 2**63)]
            for bad in bad_previews:
                assert (await call(port, "POST", "/api/v1/jobs/bulk/preview", dave, bad)).code in (404, 422), bad
            for ids in ("x", ["not-an-id"], [needle] * 1001):
                assert (await call(port, "POST", "/api/v1/jobs/bulk/cancel", dave, {"ids": ids})).code == 422

    asyncio.run(scenario())
