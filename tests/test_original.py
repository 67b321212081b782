"""An application written for the original moi (Qiita's way of using it) runs unchanged: the Python side.

The session's real Redis and cluster. The page side is tests/test_original_page.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from tornado.escape import json_encode
from tornado.httpclient import HTTPRequest
from tornado.web import create_signed_value
from tornado.websocket import websocket_connect

from moi.core.info import SEED_FIELDS
from moi.errors import IdTaken, InvalidId, InvalidUserName, NotAGroup, UnknownContext, UnknownKey
from tests import original_jobs
from tests.conftest import ROOT, finished, next_message, nothing_stored
from tests.original_app import COOKIE_SECRET, make_app
from tests.test_relay_security import frames_until, is_get_of
from tests.web import serving

# 1-3: the names applications import -----------------------------------------------------------


def test_the_original_imports_work_and_open_nothing() -> None:
    # A Redis nobody listens on: importing, and reading every name, must not connect.
    code = """
import moi
from moi import r_client, ctx_default, ctxs, REDIS_KEY_TIMEOUT, moi_js, moi_list_js
from moi.job import submit, submit_nouser, system_call, ctxs as job_ctxs, ctx_default as job_default
from moi.group import get_id_from_user, get_user_from_id, create_info
import os
context = ctxs[ctx_default]
print(ctx_default, job_default, REDIS_KEY_TIMEOUT, list(ctxs), job_ctxs is ctxs, context.name, context._client)
print(moi_js(), os.path.isfile(moi_js()), os.path.isabs(moi_js()))
print(moi_list_js(), os.path.isfile(moi_list_js()))
"""
    env = {
        **os.environ,
        "MOI_REDIS_URL": "redis://127.0.0.1:9/0",
        "MOI_CONTEXTS": "analysis=/nonexistent.json,default=/nonexistent-too.json",
        "MOI_DEFAULT_CONTEXT": "default",
        "MOI_TTL": "3600",
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    names, js, js_list = done.stdout.splitlines()
    assert names == "default default 3600 ['analysis', 'default'] True default None"
    assert js.endswith("moi/web/static/moi.js True True")
    assert js_list.endswith("moi/web/static/moi_list.js True")


def test_an_unknown_context_in_ctxs_is_an_error() -> None:
    import moi

    with pytest.raises(UnknownContext, match="known contexts: default"):
        moi.ctxs["nope"]


def test_get_id_from_user_makes_the_group_and_both_map_entries_once(r, store) -> None:
    from moi.group import get_id_from_user, get_user_from_id

    group_id = get_id_from_user("qiita@example.org")

    assert get_id_from_user("qiita@example.org") == group_id
    assert r.hget("user-id-map", "qiita@example.org") == group_id
    assert r.hget("user-id-map", group_id) == "qiita@example.org"
    group = json.loads(r.get(group_id))
    assert (group["type"], group["name"], group["parent"]) == ("group", "qiita@example.org", None)
    assert get_user_from_id(group_id) == "qiita@example.org"
    assert get_user_from_id(str(uuid.uuid4())) is None
    assert get_user_from_id("qiita@example.org") is None  # a name is not an id


def test_get_id_from_user_refuses_a_name_that_would_be_a_group_id(r, store) -> None:
    from moi.group import get_id_from_user

    someone = get_id_from_user("someone")
    with pytest.raises(InvalidUserName, match="looks like a job or group id"):
        get_id_from_user(someone)  # never another user's group by its id


def test_create_info_without_store_has_every_seed_field_and_writes_nothing(r, store) -> None:
    from moi.group import create_info

    info = create_info("an analysis", "group", url="/analysis/")

    assert set(SEED_FIELDS) <= set(info)
    assert (info["name"], info["type"], info["url"], info["parent"]) == ("an analysis", "group", "/analysis/", None)
    assert info["pubsub"] == f"{info['id']}:pubsub" and info["context"] == "default"
    job = create_info(7, "job", id=str(uuid.uuid4()), context="default")
    assert (job["name"], job["status"], job["result"]) == ("7", "Queued", None)
    assert nothing_stored(r)


def test_create_info_stored_is_a_child_announced_with_moi_expiry(r, store) -> None:
    from moi.group import create_info, get_id_from_user

    user_group = get_id_from_user("qiita")
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{user_group}:pubsub")

    group = create_info(1, "group", url="/analysis/", parent=user_group, store=True)

    assert json.loads(r.get(group["id"]))["parent"] == user_group
    assert group["id"] in r.smembers(f"{user_group}:jobs")
    assert json.loads(next_message(pubsub)["data"]) == {"add": [group["id"]]}
    assert 0 < r.ttl(group["id"]) <= store.ttl and r.ttl(f"{user_group}:jobs") > 0
    top = create_info("top", "group", store=True)
    assert json.loads(r.get(top["id"]))["parent"] is None
    pubsub.close()


def test_create_info_refuses_what_would_lose_or_misfile_a_node(r, store) -> None:
    from moi.group import create_info, get_id_from_user

    user_group = get_id_from_user("qiita")
    taken = create_info("first", "group", parent=user_group, store=True)
    with pytest.raises(IdTaken):
        create_info("second", "group", id=taken["id"], parent=user_group, store=True)
    assert json.loads(r.get(taken["id"]))["name"] == "first"
    with pytest.raises(UnknownKey):
        create_info("orphan", "group", parent=str(uuid.uuid4()), store=True)
    job = create_info("a job", "job", parent=user_group, store=True)
    with pytest.raises(NotAGroup):
        create_info("under a job", "group", parent=job["id"], store=True)
    with pytest.raises(InvalidId):
        create_info("odd id", "group", id="not-a-uuid")
    with pytest.raises(ValueError, match="'group' or 'job'"):
        create_info("odd kind", "folder")


# 3 and 5: Qiita's flow, and what its job function receives --------------------------------------


def test_qiitas_flow_runs_the_job_under_the_group_with_the_moi_arguments(r, store, tmp_path: Path) -> None:
    from moi import ctx_default
    from moi.group import create_info, get_id_from_user
    from moi.job import get_info, submit

    moi_user_id = get_id_from_user("qiita@example.org")
    group = create_info(1, "group", url="/analysis/", parent=moi_user_id, store=True)
    release = tmp_path / "release"
    cmds = {"release": str(release)}

    job_id, parent_id, handle = submit(
        ctx_default,
        group["id"],
        "Creating analysis",
        "/analysis/results/1",
        original_jobs.run_analysis,
        1,
        cmds,
        depth=3,
    )

    assert parent_id == group["id"]
    assert job_id in r.smembers(f"{group['id']}:jobs")
    _wait_for_status(job_id, "Running analysis 1 at depth 3")  # moi_update_status landed
    release.touch()
    info = finished(job_id)
    assert info["status"] == "Success", info["result"]
    assert info["result"] == {"analysis": 1, "context": "default", "parent": group["id"]}
    assert info["parent"] == group["id"] and get_info(group["id"])["parent"] == moi_user_id
    assert handle.get(timeout=30)["parent"] == group["id"]


def _wait_for_status(job_id: str, text: str) -> None:
    import time

    from moi.job import get_info

    deadline = time.monotonic() + 60  # a bound on a hang, not an assertion on time
    while get_info(job_id)["status"] != text:
        assert time.monotonic() < deadline, get_info(job_id)["result"]
        time.sleep(0.05)


def test_a_group_made_by_create_info_is_cancelled_like_any_group(r, store, tmp_path: Path) -> None:
    from moi.group import create_info, get_id_from_user
    from moi.job import cancel, submit

    group = create_info("to cancel", "group", parent=get_id_from_user("qiita"), store=True)
    job_id, _, _ = submit("default", group["id"], "waits", None, original_jobs.run_analysis, 2, {"release": "/nope"})
    _wait_for_status(job_id, "Running analysis 2 at depth 3")

    report = cancel(group["id"])

    assert job_id in report.requested  # it was running: its engine interrupts it
    assert finished(job_id)["status"] == "Cancelled"


def test_functions_without_kwargs_get_only_what_they_declare(r, store) -> None:
    from moi.job import submit, submit_many

    plain, _, _ = submit("default", "qiita", "plain", None, original_jobs.plain_add, 2, 3)
    steps, _, _ = submit("default", "qiita", "steps", None, original_jobs.only_status, 2)
    items, _, batch = submit_many("default", "qiita", "batch", None, original_jobs.plain_add, [(1, 2), (3, 4)])
    qiita_items, _, qiita_batch = submit_many(
        "default", "qiita", "qiita batch", None, original_jobs.run_analysis, [(5, None)]
    )

    assert (finished(plain)["status"], finished(plain)["result"]) == ("Success", 5)
    assert finished(steps)["result"] == 2
    assert batch.get(timeout=60) == [3, 7]
    assert [finished(job_id)["result"] for job_id in items] == [3, 7]
    group = finished(qiita_items[0])["parent"]
    assert finished(qiita_items[0])["result"] == {"analysis": 5, "context": "default", "parent": group}
    qiita_batch.get(timeout=60)


# 8: the original's quoted cookie ------------------------------------------------------------------


def test_a_json_encoded_cookie_names_the_same_user_as_a_plain_one(r, store) -> None:
    from moi.group import get_id_from_user

    alice = get_id_from_user("alice")

    async def group_seen(value: str) -> str:
        cookie = create_signed_value(COOKIE_SECRET, "user", value).decode()
        async with serving(make_app()) as port:
            request = HTTPRequest(f"ws://127.0.0.1:{port}/moi-ws/", headers={"Cookie": f"user={cookie}"})
            ws = await websocket_connect(request)
            ws.write_message(json.dumps({"get": []}))
            frames = await frames_until(ws, is_get_of(alice))
            ws.close()
            return str(frames[-1]["get"]["id"])

    assert asyncio.run(group_seen(json_encode("alice"))) == alice
    assert asyncio.run(group_seen("alice")) == alice


def test_a_login_name_that_starts_with_a_quote_is_refused() -> None:
    from moi.websocket import user_name_problem

    assert user_name_problem('"alice"') is not None
    assert user_name_problem('"alice') is not None
    assert user_name_problem('al"ice') is None


# 7: moi server serves the list widget beside moi.js -----------------------------------------------


def test_moi_server_serves_moi_list_js_beside_moi_js() -> None:
    from tornado.httpclient import AsyncHTTPClient

    from moi.server import STATIC_PATH
    from moi.server import make_app as moi_server_app

    async def fetch(name: str) -> bytes:
        async with serving(moi_server_app(cookie_secret="x")) as port:
            response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/static/{name}")
            return bytes(response.body)

    for name in ("moi.js", "moi_list.js"):
        assert asyncio.run(fetch(name)) == (STATIC_PATH / name).read_bytes()
