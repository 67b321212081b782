"""Which group a key names: a uuid is a group id, any other string a user name through user-id-map.

A user name is never resolved as a node id, so no name can alias another user's group.
"""

from __future__ import annotations

import json
import uuid

import pytest

from moi.core.info import new_info
from moi.errors import InvalidId, NotAGroup
from moi.job import create_group, submit
from tests import jobs
from tests.conftest import finished, next_message, run_moi


def add_job(store, group_id: str, name: str = "job") -> str:
    job_id = str(uuid.uuid4())
    store.add_nodes(group_id, [new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id)])
    return job_id


def test_submit_to_a_users_group_id_lands_under_that_group(r, store) -> None:
    alice = store.ensure_group("alice")

    job_id, parent_id, handle = submit("default", alice, "by id", None, jobs.add, 1, 2)

    handle.get(timeout=30)
    assert parent_id == alice
    assert json.loads(r.get(job_id))["parent"] == alice
    assert r.smembers(f"{alice}:jobs") == {job_id}
    assert r.hgetall("user-id-map") == {"alice": alice, alice: "alice"}  # no new user, no new group


def test_a_uuid_is_a_group_id_even_when_the_map_holds_it_as_a_name(r, store) -> None:
    bob = store.ensure_group("bob")
    alias = str(uuid.uuid4())
    r.hset("user-id-map", alias, bob)  # left by an older moi, or written by hand: a "user" named like an id

    job_id, parent_id, handle = submit("default", alias, "aliased", None, jobs.add, 1, 2)

    handle.get(timeout=30)
    assert parent_id == alias != bob
    assert r.smembers(f"{bob}:jobs") == set()
    assert store.ensure_group(bob) == bob


def test_a_user_name_never_reaches_a_node_by_its_id(r, store) -> None:
    planted = new_info("carol", "carol", "group", "carol:pubsub")
    r.set("carol", json.dumps(planted))  # a group whose id is a user's name: not what "carol" names

    group_id = store.ensure_group("carol")

    assert group_id != "carol"
    assert uuid.UUID(group_id)
    assert r.hget("user-id-map", "carol") == group_id
    assert store.group_of_user("carol") == group_id


def test_a_never_seen_uuid_becomes_a_top_level_group_with_exactly_that_id(r, store) -> None:
    fresh = str(uuid.uuid4())
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{fresh}:pubsub")

    job_id, parent_id, handle = submit("default", fresh, "first", None, jobs.add, 2, 3)

    assert parent_id == fresh
    group = json.loads(r.get(fresh))
    assert (group["id"], group["type"], group["name"], group["parent"]) == (fresh, "group", "unnamed", None)
    assert json.loads(r.get(job_id))["parent"] == fresh
    assert r.smembers(f"{fresh}:jobs") == {job_id}
    assert json.loads(next_message(pubsub)["data"]) == {"add": [job_id]}
    assert not r.exists("user-id-map")  # an id is not a user
    assert handle.get(timeout=30) == 5
    pubsub.close()


def test_a_job_id_is_not_a_group(r, store) -> None:
    job_id = add_job(store, store.ensure_group("dave"))

    for attempt in (
        lambda: store.ensure_group(job_id),
        lambda: submit("default", job_id, "under a job", None, jobs.add, 1, 1),
        lambda: create_group("nested", parent=job_id),
        lambda: store.group_of_user(job_id),
    ):
        with pytest.raises(NotAGroup, match="is a job, not a group"):
            attempt()
    assert not r.exists(f"{job_id}:jobs")


def test_a_uuid_spelled_some_other_way_is_refused(store) -> None:
    group = str(uuid.uuid4())
    for spelling in (group.upper(), "{" + group + "}", group.replace("-", "")):
        with pytest.raises(InvalidId):
            store.ensure_group(spelling)


def test_create_group_under_a_user_and_under_a_group_id(r, store) -> None:
    erin = store.ensure_group("erin")
    by_name = create_group("one", parent="erin")
    by_id = create_group("two", parent=erin)
    assert r.smembers(f"{erin}:jobs") == {by_name, by_id}


def test_cli_userjobs_by_group_id_shows_that_users_jobs(r, store) -> None:
    bob = store.ensure_group("bob")
    jobs_of_bob = {add_job(store, bob, "bob's") for _ in range(2)}
    add_job(store, store.ensure_group("alice"), "alice's")

    shown = run_moi("userjobs", "--key", bob, "--summary")

    assert shown.returncode == 0, shown.stderr
    assert {line.split("\tid: ")[1].split("\t")[0] for line in shown.stdout.splitlines()} == jobs_of_bob


def test_cli_submit_user_by_group_id(r, store) -> None:
    frank = store.ensure_group("frank")
    done = run_moi("submit", "--user", frank, "--cmd", "return 1")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split(": ")[1].strip()
    assert finished(job_id)["parent"] == frank


def test_cli_submit_user_that_is_a_job_id_is_one_line(r, store) -> None:
    job_id = add_job(store, store.ensure_group("gina"))
    done = run_moi("submit", "--user", job_id, "--cmd", "return 1")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"{job_id} is a job, not a group; give a user name or a group id\n"


def test_users_lists_names_not_the_ids_the_map_also_holds(r, store) -> None:
    alice, bob = store.ensure_group("alice"), store.ensure_group("bob")
    r.hset("user-id-map", str(uuid.uuid4()), bob)  # a uuid "user" from an older moi: an id, not a name
    assert store.users() == {"alice": alice, "bob": bob}
    shown = run_moi("users")
    assert shown.stdout.splitlines() == [f"alice\t{alice}", f"bob\t{bob}"]
