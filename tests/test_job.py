"""The Python API against a real Redis and a real ipyparallel cluster."""

from __future__ import annotations

import json

import pytest

import moi
from moi.core.keys import Keys
from moi.errors import CommandFailed, UnknownContext
from moi.job import submit, submit_nouser, system_call
from tests import jobs
from tests.conftest import finished, next_message

SEED_FIELDS = {
    "id", "name", "type", "pubsub", "url", "parent", "status", "result",
    "date_start", "date_end", "context", "date_created",
}  # fmt: skip


def test_public_names() -> None:
    from moi import ctx_default, r_client

    assert ctx_default == "default"
    assert r_client.ping()
    assert set(moi.__all__) == {
        "configure",
        "settings",
        "ctx_default",
        "ctxs",
        "r_client",
        "REDIS_KEY_TIMEOUT",
        "moi_js",
        "moi_list_js",
        "MoiError",
        "Status",
    }


def test_submit_stores_queued_job_and_announces_it_before_returning(r, store) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    group_id = store.ensure_group("alice")
    pubsub.subscribe(f"{group_id}:pubsub")

    job_id, parent_id, handle = submit("default", "alice", "adding", "/result", jobs.sleepy, 0.5)

    assert parent_id == group_id
    info = json.loads(r.get(job_id))  # read right away: the engine is still sleeping
    assert set(info) >= SEED_FIELDS
    assert info["status"] in ("Queued", "Running")
    assert (info["id"], info["name"], info["type"], info["url"]) == (job_id, "adding", "job", "/result")
    assert (info["parent"], info["context"], info["pubsub"]) == (group_id, "default", f"{job_id}:pubsub")
    assert job_id in r.smembers(f"{group_id}:jobs")
    message = next_message(pubsub)
    assert json.loads(message["data"]) == {"add": [job_id]}
    assert handle.get(timeout=30) == 0.5
    pubsub.close()


def test_new_group_is_a_group_info_object(r, store) -> None:
    _, group_id, handle = submit("default", "newbie", "n", None, jobs.add, 1, 2)
    handle.get(timeout=30)
    group = json.loads(r.get(group_id))
    assert (group["type"], group["name"], group["parent"]) == ("group", "newbie", None)
    assert r.hget("user-id-map", "newbie") == group_id


def test_job_runs_to_success_and_announces_each_change(r, store) -> None:
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    job_id, _, handle = submit("default", "bob", "adder", None, jobs.sleepy, 0.3)
    pubsub.subscribe(f"{job_id}:pubsub")
    info = finished(job_id)
    assert info["status"] == "Success"
    assert info["result"] == 0.3
    assert info["date_start"] and info["date_end"] and info["date_start"] <= info["date_end"]
    updates = []
    while (message := next_message(pubsub, timeout=1)) is not None:
        updates.append(json.loads(message["data"]))
    assert updates and all(update == {"update": [job_id]} for update in updates)
    pubsub.close()


def test_failing_job_stores_traceback(store) -> None:
    job_id, _, _ = submit("default", "bob", "fails", None, jobs.fail)
    info = finished(job_id)
    assert info["status"] == "Failed"
    assert info["result"].startswith("Traceback (most recent call last):")
    assert "crash and burn" in info["result"]
    assert info["date_end"]


def test_status_update_stores_and_publishes_text(r, store) -> None:
    job_id, _, handle = submit("default", "carol", "chatty", None, jobs.chatty, 3)
    handle.get(timeout=30)
    info = finished(job_id)
    assert info["status"] == "Success"
    assert info["result"] == "done"
    assert info["revision"] == 5  # Running, 3 status texts, Success


def test_context_object_is_accepted(store) -> None:
    context = moi.jobs.connections.get_context("default")
    job_id, _, _ = submit(context, "dave", "ctx", None, jobs.add, 2, 3)
    assert finished(job_id)["result"] == 5


def test_unknown_context_names_it_and_lists_known(store) -> None:
    with pytest.raises(UnknownContext, match="'nope'.*known contexts: default"):
        submit("nope", "erin", "x", None, jobs.add, 1, 1)


def test_submit_nouser(r, store) -> None:
    job_id, group_id, _ = submit_nouser(jobs.add, 20, 22)
    assert finished(job_id)["result"] == 42
    assert r.hget("user-id-map", "no-user") == group_id


def test_system_call_returns_streams_and_code() -> None:
    assert system_call("echo out; echo err >&2") == ["out\n", "err\n", 0]


def test_system_call_failure_carries_both_streams() -> None:
    with pytest.raises(CommandFailed) as caught:
        system_call("echo partial; echo broken >&2; exit 3")
    message = str(caught.value)
    assert "partial" in message and "broken" in message and "3" in message


def test_system_call_as_a_job(store) -> None:
    job_id, _, _ = submit("default", "frank", "shell", None, system_call, "echo 'hello from moi'")
    assert finished(job_id)["result"] == ["hello from moi\n", "", 0]


def test_result_that_is_not_json_is_stored_as_text(store) -> None:
    job_id, _, _ = submit("default", "gina", "odd", None, jobs.not_json)
    info = finished(job_id)
    assert info["status"] == "Success"
    assert info["result_format"] == "repr"
    assert info["result"].startswith("{'when': <object object at")


def test_nan_result_does_not_strand_the_job(store) -> None:
    job_id, _, _ = submit("default", "gina", "nan", None, jobs.nan)
    info = finished(job_id)
    assert (info["status"], info["result"], info["result_format"]) == ("Success", "nan", "repr")


def test_everything_expires(r, store) -> None:
    job_id, group_id, _ = submit("default", "henry", "ttl", None, jobs.sleepy, 1.0)
    # Checked while the job is still queued or running, not only once it is done.
    for key in (job_id, group_id, f"{group_id}:jobs", "user-id-map"):
        assert 0 < r.ttl(key) <= 14 * 24 * 3600, key
    finished(job_id)
    assert 0 < r.ttl(job_id) <= 14 * 24 * 3600


def test_configured_ttl_and_prefix(redis_url, r) -> None:
    moi.configure(ttl=120, key_prefix="app1:")
    try:
        job_id, group_id, _ = submit("default", "ivy", "short", None, jobs.add, 1, 1)
        keys = Keys("app1:")
        assert finished(job_id)["result"] == 2
        assert r.exists(keys.info(job_id)) and not r.exists(job_id)
        assert 0 < r.ttl(keys.info(job_id)) <= 120
        assert job_id in r.smembers(keys.children(group_id))
    finally:
        moi.configure(ttl=14 * 24 * 3600, key_prefix="")


def test_submit_into_a_nested_group_by_its_id(r, store) -> None:
    from moi.job import create_group

    workflow = create_group("assembly", parent="lena")
    job_id, group_id, _ = submit("default", workflow, "step 1", None, jobs.add, 1, 2)
    assert group_id == workflow
    assert finished(job_id)["parent"] == workflow
    user_group = r.hget("user-id-map", "lena")
    assert json.loads(r.get(workflow))["parent"] == user_group
    assert store.group_of_user(workflow) == workflow
    assert [info["id"] for info in store.descendant_jobs(user_group)] == [job_id]
