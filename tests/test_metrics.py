"""/metrics (parsed with prometheus_client's own parser) and /api/v1/workers, against a real server and cluster."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPResponse

from tests.conftest import ENGINES, finished
from tests.test_api import call, payload, token_for
from tests.test_relay_security import server


def samples(answer: HTTPResponse) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert answer.code == 200 and answer.headers["Content-Type"].startswith("text/plain"), answer.body
    found = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def workers_until(port: int, token: str, done: Any) -> list[dict[str, Any]]:
    """The workers listing, asked again until ``done(listing)`` (the dispatcher notes engines per tick)."""
    deadline = time.monotonic() + 60
    while True:
        found = payload(await call(port, "GET", "/api/v1/workers", token))["workers"]
        if done(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def test_metrics_count_what_ended_and_are_for_admins_only(r) -> None:
    alice, ops = token_for("alice"), token_for("ops", admin=True)

    async def scenario() -> None:
        async with server() as port:
            made = []
            for cmd in ("return 1", "return 2", "raise ValueError('no')"):
                made.append(payload(await call(port, "POST", "/api/v1/jobs", alice, {"cmd": cmd}))["id"])
            for job_id in made:
                finished(job_id)
            for _ in range(100):  # the online note is renewed per dispatcher tick, and the test emptied Redis
                if r.exists("moi:online:default"):
                    break
                await asyncio.sleep(0.1)
            assert payload(await call(port, "GET", "/metrics"))["code"] == "unauthorized"
            refused = await call(port, "GET", "/metrics", alice)
            assert (refused.code, payload(refused)["code"]) == (403, "forbidden")

            found = samples(await call(port, "GET", "/metrics", ops))
            assert found[("moi_jobs_ended_total", (("service", ""), ("status", "Success")))] == 2
            assert found[("moi_jobs_ended_total", (("service", ""), ("status", "Failed")))] == 1
            assert found[("moi_job_run_seconds_count", ())] == 3
            assert found[("moi_job_wait_seconds_bucket", (("le", "+Inf"),))] == 3
            assert found[("moi_jobs_queued", (("context", "default"), ("priority", "normal")))] == 0
            assert found[("moi_jobs_running", ())] == 0
            assert found[("moi_context_online", (("context", "default"),))] == 1
            assert found[("moi_mail_failed_total", ())] == 0
            assert ("moi_websocket_clients", ()) in found and ("moi_relay_frames_total", ()) in found

    asyncio.run(scenario())


def test_workers_show_each_engine_what_it_runs_and_only_your_job(r) -> None:
    alice, bob, ops = token_for("alice"), token_for("bob"), token_for("ops", admin=True)

    async def scenario() -> None:
        async with server() as port:
            slow = payload(await call(port, "POST", "/api/v1/jobs", alice, {"cmd": "import time; time.sleep(60)"}))
            mine = await workers_until(port, alice, lambda found: any(w["job"] == slow["id"] for w in found))
            busy = [worker for worker in mine if worker["job"] == slow["id"]]
            assert len(busy) == 1 and busy[0]["state"] == "busy" and busy[0]["context"] == "default"
            assert busy[0]["host"] and isinstance(busy[0]["pid"], int)
            theirs = payload(await call(port, "GET", "/api/v1/workers", bob))["workers"]
            assert [w["job"] for w in theirs if w["label"] == busy[0]["label"]] == [None]  # busy, but not bob's job
            assert [w["state"] for w in theirs if w["label"] == busy[0]["label"]] == ["busy"]
            await call(port, "POST", f"/api/v1/jobs/{slow['id']}/cancel", alice)
            finished(slow["id"])

            def settled(found: list[dict[str, Any]]) -> bool:
                ran = [w["done"] for w in found if w["label"] == busy[0]["label"]]
                return sum(w["state"] == "idle" for w in found) >= ENGINES and ran[0] >= 1

            everyone = await workers_until(port, ops, settled)
            assert settled(everyone)  # every engine idle again, and the one that ran the job counts it
            found = samples(await call(port, "GET", "/metrics", ops))
            assert found[("moi_engines", (("context", "default"), ("state", "idle")))] >= ENGINES

    asyncio.run(scenario())
