"""The HTTP API against a real Tornado server, over real HTTP, with tokens: each route and each error code."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from examples.hetatm_service import Hetatm
from moi import services
from moi.core.info import Status
from moi.jobs import connections
from moi.storage import tokens
from tests.conftest import finished
from tests.test_relay_security import cookie, server


def token_for(user: str, admin: bool = False, code: bool = True) -> str:
    """A token for ``user``; by default one that may run code (these tests submit cmd jobs: see test_code_grant)."""
    return tokens.create(connections.store(), user, admin=admin, code=code)


async def call(
    port: int, method: str, path: str, token: str | None = None, body: Any = None, **options: Any
) -> HTTPResponse:
    headers = dict(options.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if method in ("POST", "PUT") and data is None:
        data = b""
    return await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}", method=method, headers=headers, body=data, raise_error=False, **options
    )


def payload(answer: HTTPResponse) -> Any:
    assert answer.headers["Content-Type"] == "application/json", answer.body
    return json.loads(answer.body)


def test_a_job_is_submitted_read_and_acted_on_through_the_api(r) -> None:
    alice = token_for("alice")

    async def scenario() -> None:
        async with server() as port:
            made = await call(port, "POST", "/api/v1/jobs", alice, {"cmd": "return 6 * 7", "name": "answer"})
            assert made.code == 201, made.body
            job = payload(made)
            assert made.headers["Location"] == f"/api/v1/jobs/{job['id']}"
            assert finished(job["id"])["status"] == Status.SUCCESS
            read = payload(await call(port, "GET", made.headers["Location"], alice))
            assert (read["name"], read["status"], read["result"], read["parent"]) == (
                "answer",
                "Success",
                42,
                job["group"],
            )

            shell = payload(await call(port, "POST", "/api/v1/jobs", alice, {"cmd": "echo hi", "cmd_type": "system"}))
            assert finished(shell["id"])["result"] == ["hi\n", "", 0]

            again = await call(port, "POST", f"/api/v1/jobs/{job['id']}/relaunch", alice)
            assert again.code == 201 and finished(payload(again)["id"])["result"] == 42

            finished_cancel = await call(port, "POST", f"/api/v1/jobs/{job['id']}/cancel", alice)
            assert finished_cancel.code == 409
            assert payload(finished_cancel) == {
                "error": f"Job {job['id']} has already finished; nothing to cancel",
                "code": "conflict",
            }

            slow = payload(
                await call(
                    port, "POST", "/api/v1/jobs", alice, {"cmd": "import time; time.sleep(60)", "priority": "normal"}
                )
            )
            cancelled = await call(port, "POST", f"/api/v1/jobs/{slow['id']}/cancel", alice)
            assert cancelled.code == 200
            assert finished(slow["id"])["status"] == Status.CANCELLED

            gone = await call(port, "DELETE", f"/api/v1/jobs/{job['id']}", alice)
            assert gone.code == 204
            assert (await call(port, "GET", f"/api/v1/jobs/{job['id']}", alice)).code == 404

    asyncio.run(scenario())


def test_a_service_job_through_the_api_and_its_refusals(r) -> None:
    services.register(Hetatm)
    alice = token_for("alice")

    async def scenario() -> None:
        async with server() as port:
            made = await call(port, "POST", "/api/v1/jobs", alice, {"service": "hetatm", "params": {"residue": "ZN"}})
            assert made.code == 201, made.body
            info = finished(payload(made)["id"])
            assert (info["service"], info["params"], info["status"]) == ("hetatm", {"residue": "ZN"}, "Success")

            unknown = await call(port, "POST", "/api/v1/jobs", alice, {"service": "nope"})
            assert unknown.code == 422 and payload(unknown)["code"] == "unknown_service"
            bad = await call(port, "POST", "/api/v1/jobs", alice, {"service": "hetatm", "params": {"colour": 1}})
            assert bad.code == 422 and "Parameter 'colour' is refused" in payload(bad)["error"]

    try:
        asyncio.run(scenario())
    finally:
        services.unregister("hetatm")


def test_every_error_is_json_with_its_status(r, monkeypatch: Any) -> None:
    alice, bob, ops = token_for("alice"), token_for("bob"), token_for("ops", admin=True)

    async def scenario() -> None:
        async with server(moi_api_max_body=1000) as port:
            jobs = "/api/v1/jobs"
            assert payload(await call(port, "GET", f"{jobs}/x")) == {
                "error": "log in, or send Authorization: Bearer <token>",
                "code": "unauthorized",
            }
            assert (await call(port, "GET", f"{jobs}/x", "moi_0123456789ab_" + "a" * 43)).code == 401
            not_json = await call(port, "POST", jobs, alice, b"{not json")
            assert (not_json.code, payload(not_json)["code"]) == (400, "bad_request")
            assert (await call(port, "POST", jobs, alice, [1, 2])).code == 400
            assert (await call(port, "POST", jobs, alice, {"nothing": 1})).code == 422
            syntax = await call(port, "POST", jobs, alice, {"cmd": "return ("})
            assert syntax.code == 422 and "does not compile" in payload(syntax)["error"]
            assert (await call(port, "POST", jobs, alice, {"cmd": "1", "priority": "urgent"})).code == 422
            big = await call(port, "POST", jobs, alice, {"cmd": "x" * 2000})
            assert (big.code, payload(big)["code"]) == (413, "too_large")

            mine = payload(await call(port, "POST", jobs, alice, {"cmd": "return 1"}))["id"]
            finished(mine)
            assert (await call(port, "GET", f"{jobs}/{mine}", bob)).code == 404  # not yours: as if it did not exist
            assert (await call(port, "POST", f"{jobs}/{mine}/cancel", bob)).code == 404
            assert (await call(port, "GET", f"{jobs}/{mine}", ops)).code == 200  # an admin sees every tree
            assert (await call(port, "GET", f"{jobs}/00000000-0000-4000-8000-000000000000", alice)).code == 404
            assert (await call(port, "POST", f"{jobs}/{mine}/pause", alice)).code == 409

            # A cookie login works too, with Tornado's XSRF token on a POST.
            by_cookie = await call(
                port, "POST", jobs, body={"cmd": "return 2"}, headers={"Cookie": f"user={cookie('alice')}"}
            )
            assert by_cookie.code == 403  # no XSRF token

    asyncio.run(scenario())

    monkeypatch.setenv("MOI_HARD_LIMIT", "1")
    connections.reset()

    async def limited() -> None:
        async with server() as port:
            first = await call(port, "POST", "/api/v1/jobs", alice, {"cmd": "import time; time.sleep(30)"})
            assert first.code == 201
            refused = await call(port, "POST", "/api/v1/jobs", alice, {"cmd": "return 1"})
            assert (refused.code, payload(refused)["code"], refused.headers["Retry-After"]) == (429, "hard_limit", "10")
            await call(port, "POST", f"/api/v1/jobs/{payload(first)['id']}/cancel", alice)
            # Landed before the next test empties Redis (its flag with it): else the job holds an engine for 30 s.
            assert finished(payload(first)["id"])["status"] == Status.CANCELLED

    try:
        asyncio.run(limited())
    finally:
        monkeypatch.undo()
        connections.reset()


def test_the_list_is_newest_first_filtered_and_paged_from_the_index(r) -> None:
    alice, bob, ops = token_for("alice"), token_for("bob"), token_for("ops", admin=True)

    async def scenario() -> None:
        async with server() as port:
            ids = []
            for index in range(7):
                cmd = "return 1" if index % 2 == 0 else "raise ValueError('odd')"
                made = await call(port, "POST", "/api/v1/jobs", alice, {"cmd": cmd, "name": f"run-{index}"})
                ids.append(payload(made)["id"])
            theirs = payload(await call(port, "POST", "/api/v1/jobs", bob, {"cmd": "return 0", "name": "bobs"}))
            for job_id in [*ids, theirs["id"]]:
                finished(job_id)

            first = payload(await call(port, "GET", "/api/v1/jobs?limit=3", alice))
            assert [job["name"] for job in first["jobs"]] == ["run-6", "run-5", "run-4"]
            rest = payload(await call(port, "GET", f"/api/v1/jobs?limit=10&cursor={first['next']}", alice))
            assert [job["name"] for job in rest["jobs"]] == ["run-3", "run-2", "run-1", "run-0"]
            assert rest["next"] is None

            failed = payload(await call(port, "GET", "/api/v1/jobs?status=Failed", alice))
            assert [job["name"] for job in failed["jobs"]] == ["run-5", "run-3", "run-1"]
            named = payload(await call(port, "GET", "/api/v1/jobs?q=RUN-2", alice))
            assert [job["name"] for job in named["jobs"]] == ["run-2"]
            later = payload(
                await call(port, "GET", f"/api/v1/jobs?since={quote(first['jobs'][0]['date_created'])}", alice)
            )
            assert [job["name"] for job in later["jobs"]] == ["run-6"]

            assert [job["name"] for job in payload(await call(port, "GET", "/api/v1/jobs", bob))["jobs"]] == ["bobs"]
            listed = await call(port, "GET", "/api/v1/jobs?limit=1000", ops)
            assert listed.code == 200, (listed.code, listed.body, listed.error)
            everyone = payload(listed)
            assert {job["name"] for job in everyone["jobs"]} >= {"bobs", "run-0"}  # an admin lists every user's

            assert (await call(port, "DELETE", f"/api/v1/jobs/{ids[6]}", alice)).code == 204
            assert payload(await call(port, "GET", "/api/v1/jobs?limit=1", alice))["jobs"][0]["name"] == "run-5"
            for bad in ("limit=0", "limit=1001", "limit=x", "cursor=-1"):
                assert (await call(port, "GET", f"/api/v1/jobs?{bad}", alice)).code == 400

    asyncio.run(scenario())


def test_index_entries_of_jobs_gone_from_redis_are_pruned_by_the_sweeper(r) -> None:
    from moi.job import submit
    from moi.queue import listing
    from tests import jobs

    store = connections.store()
    ids = [submit("default", "pruner", "j", None, jobs.add, 1, 1)[0] for _ in range(3)]
    for job_id in ids:
        finished(job_id)
    owner = store.ensure_group("pruner")
    r.delete(ids[0])  # expired by Redis
    assert listing.prune(store) == 2  # from the owner's index and everyone's
    assert r.zrange(f"moi:index:{owner}", 0, -1) == ids[1:] == r.zrange("moi:index", 0, -1)


def test_services_groups_queues_contexts_health_and_a_jobs_files_and_log(r, tmp_path: Any) -> None:
    from moi import files
    from moi.job import create_group, pause, resume, submit
    from tests import files_jobs, service_defs

    services.register(service_defs.Recording)
    alice, bob = token_for("alice"), token_for("bob")
    inner = create_group("inner", "alice")
    in_inner, _, handle = submit("default", inner, "nested", None, files_jobs.use_files, files={"a.txt": b"x"})
    handle.get(timeout=60)
    logged = services.submit("recording", "alice", {"reruns": 1})[0]
    assert finished(logged)["status"] == Status.SUCCESS
    pause(context="default")
    held = submit("default", "alice", "held", None, files_jobs.where)[0]

    async def scenario() -> None:
        async with server() as port:
            listed = payload(await call(port, "GET", "/api/v1/services", alice))["services"]
            recording = next(service for service in listed if service["name"] == "recording")
            assert recording["parameters"][0] == {
                "name": "reruns",
                "type": "int",
                "default": 0,
                "required": False,
                "help": "",
                "secret": False,
            }

            tree = payload(await call(port, "GET", f"/api/v1/groups/{inner}", alice))
            assert tree["group"]["id"] == inner and [node["id"] for node in tree["nodes"]] == [in_inner]
            assert (await call(port, "GET", f"/api/v1/groups/{inner}", bob)).code == 404

            queues = payload(await call(port, "GET", "/api/v1/queues", alice))["queues"]
            assert queues["default"] == {"queued": {"high": 0, "normal": 0, "low": 0}, "held": 1, "paused": True}
            for _ in range(600):  # until this session's dispatcher has noted the cluster online again
                contexts = payload(await call(port, "GET", "/api/v1/contexts", alice))["contexts"]
                if contexts["default"]["online"]:
                    break
                await asyncio.sleep(0.1)
            assert contexts["default"]["online"] is True and contexts["default"]["engines"] >= 1

            health = await call(port, "GET", "/healthz")
            assert (health.code, json.loads(health.body)) == (200, {"redis": "ok", "contexts": {"default": "online"}})

            listing = payload(await call(port, "GET", f"/api/v1/jobs/{in_inner}/files", alice))
            assert "input/a.txt" in [entry["path"] for entry in listing["entries"]]
            one = await call(port, "GET", f"/api/v1/jobs/{in_inner}/files/input/a.txt", alice)
            assert (one.code, one.body) == (200, b"x")
            assert (await call(port, "GET", f"/api/v1/jobs/{in_inner}/files/input/a.txt", bob)).code == 404
            log = await call(port, "GET", f"/api/v1/jobs/{logged}/log", alice)
            assert log.code == 200 and b"postprocess saw 1 run(s)" in log.body
            assert (await call(port, "GET", f"/api/v1/jobs/{in_inner}/log", alice)).code == 404  # no log written

    try:
        asyncio.run(scenario())
    finally:
        resume(context="default")
        finished(held)
        services.unregister("recording")
    assert files.list(in_inner)


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body as a browser's form sends it."""
    boundary = "moi-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, data in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="input"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_service_job_with_uploaded_inputs_and_the_uploads_refused(r) -> None:
    from examples.hetatm_service import SAMPLE

    services.register(Hetatm)
    alice = token_for("alice")

    async def scenario() -> None:
        async with server(moi_api_max_upload=4000) as port:
            body, headers = multipart({"service": "hetatm", "params": '{"residue": "ZN"}'}, {"x.pdb": SAMPLE.encode()})
            made = await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)
            assert made.code == 201, made.body
            job_id = payload(made)["id"]
            assert finished(job_id)["status"] == Status.SUCCESS
            listing = payload(await call(port, "GET", f"/api/v1/jobs/{job_id}/files", alice))
            assert {"input/x.pdb", "output/hetatm.pdb"} <= {entry["path"] for entry in listing["entries"]}
            output = await call(port, "GET", f"/api/v1/jobs/{job_id}/files/output/hetatm.pdb", alice)
            assert output.body.decode().split() == SAMPLE.splitlines()[4].split()

            for files, status, text in [
                ({"x.pdb": b"not a structure"}, 422, "refused by validator pdb"),
                ({"../x.pdb": SAMPLE.encode()}, 422, "x.pdb"),
                ({"x.pdb": SAMPLE.encode() * 20}, 413, "over 4000 bytes"),
            ]:
                body, headers = multipart({"service": "hetatm"}, files)
                refused = await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)
                assert refused.code == status and text in payload(refused)["error"], (files.keys(), refused.body)
            body, headers = multipart({"cmd": "return 1"}, {"x.pdb": SAMPLE.encode()})
            assert (await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)).code == 422
            # A parameter sent as a field of its own is not dropped: refused, by its name.
            body, headers = multipart({"service": "hetatm", "residue": "ZN"}, {"x.pdb": SAMPLE.encode()})
            stray = await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)
            assert stray.code == 422 and "unknown field 'residue'" in payload(stray)["error"], stray.body

    try:
        asyncio.run(scenario())
    finally:
        services.unregister("hetatm")
