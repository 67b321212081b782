"""Documents moi did not write, put straight into Redis: one line naming the key, never a traceback.

And a Redis that answers with a refusal is not called unreachable.
"""

from __future__ import annotations

import json
import re
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from moi.core.info import Stored, new_info
from moi.errors import BadDocument, RedisRefused
from moi.storage.redis_errors import reaching
from tests.conftest import kept, run_moi


def add_job(store, group_id: str, name: str = "job") -> str:
    job_id = str(uuid.uuid4())
    store.add_nodes(group_id, [new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id)])
    return job_id


def good(job_id: str, **fields) -> str:
    return json.dumps({**new_info(job_id, "planted", "job", f"{job_id}:pubsub"), **fields})


# what is written under the bad key -> what the message says is wrong with it
BAD_DOCUMENTS = {
    "not JSON": (lambda job_id: "{not json", "it is not JSON"),
    "JSON, not an object": (lambda job_id: "[1, 2, 3]", "it is JSON but not an object (a list)"),
    "no id": (lambda job_id: json.dumps({"name": "anonymous", "type": "job"}), "it has no id"),
    "date_created not a string": (lambda job_id: good(job_id, date_created=20150601), "its date_created is 20150601"),
    "revision not a number": (lambda job_id: good(job_id, revision="seven"), "its revision is 'seven'"),
}


@pytest.fixture
def alice(r, store) -> tuple[str, str]:
    """alice's group and one good job in it."""
    group_id = store.ensure_group("alice")
    return group_id, add_job(store, group_id, "good one")


def plant(r, group_id: str, case: str) -> tuple[str, str]:
    """A bad document among the group's children; (its id, the problem the message names)."""
    bad_id = str(uuid.uuid4())
    document, problem = BAD_DOCUMENTS[case]
    r.set(bad_id, document(bad_id))
    r.sadd(f"{group_id}:jobs", bad_id)
    return bad_id, problem


def assert_one_line_about(done, key: str, problem: str) -> None:
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"Key {key} holds a bad document: {problem}"), done.stderr


@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_moi_job_names_the_bad_key(r, alice, case: str) -> None:
    bad_id, problem = plant(r, alice[0], case)
    done = run_moi("job", "--job-id", bad_id)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_line_about(done, bad_id, problem)


@pytest.mark.parametrize("summary", [False, True])
@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_userjobs_shows_the_good_jobs_and_names_the_bad_key(r, alice, case: str, summary: bool) -> None:
    group_id, good_id = alice
    bad_id, problem = plant(r, group_id, case)

    done = run_moi("userjobs", "--key", "alice", *(["--summary"] if summary else []))

    assert done.returncode == 1
    assert good_id in done.stdout and bad_id not in done.stdout
    assert_one_line_about(done, bad_id, problem)


@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_cancel_of_the_bad_job_is_one_line(r, alice, case: str) -> None:
    bad_id, problem = plant(r, alice[0], case)
    done = run_moi("cancel", "--job-id", bad_id)
    assert (done.returncode, done.stdout) == (1, "")
    assert_one_line_about(done, bad_id, problem)


@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_cancel_of_the_group_cancels_the_good_jobs_and_warns_of_the_bad(r, alice, case: str) -> None:
    group_id, good_id = alice
    bad_id, problem = plant(r, group_id, case)

    done = run_moi("cancel", "--job-id", group_id)

    assert done.returncode == 1, done.stderr  # the good job is cancelled; the bad key is named, one line
    assert done.stdout == f"Cancel {group_id}: 1 queued job(s) cancelled\n"
    assert done.stderr.startswith(f"Key {bad_id} holds a bad document: {problem}") and done.stderr.count("\n") == 1
    assert json.loads(r.get(good_id))["status"] == "Cancelled"


def test_a_jobs_key_of_the_wrong_type_is_named_not_called_unreachable(r, alice) -> None:
    group_id, _ = alice
    r.delete(f"{group_id}:jobs")
    r.set(f"{group_id}:jobs", "not a set")
    expected = f"Key {group_id}:jobs holds a bad document: it holds a Redis string, not a set of ids"

    for summary in ([], ["--summary"]):
        done = run_moi("userjobs", "--key", "alice", *summary)
        assert done.returncode == 1
        assert "unreachable" not in done.stderr
        assert done.stderr.startswith(expected) and done.stderr.count("\n") == 1, done.stderr
    cancelled = run_moi("cancel", "--job-id", group_id)
    assert "Traceback" not in cancelled.stderr and expected in cancelled.stderr
    assert run_moi("job", "--job-id", group_id).returncode == 0  # the group itself is fine


def test_a_nested_groups_bad_jobs_key_does_not_hide_the_others(r, store, alice) -> None:
    group_id, good_id = alice
    nested = store.create_group("analysis", group_id)
    r.hset(f"{nested}:jobs", "field", "value")
    done = run_moi("userjobs", "--key", "alice", "--summary")
    assert done.returncode == 1
    assert good_id in done.stdout
    assert done.stderr.startswith(f"Key {nested}:jobs holds a bad document: it holds a Redis hash, not a set")


def test_a_job_key_holding_a_set_is_named(r) -> None:
    node_id = str(uuid.uuid4())
    r.sadd(node_id, "member")
    done = run_moi("job", "--job-id", node_id)
    assert done.returncode == 1
    assert done.stderr == (
        f"Key {node_id} holds a bad document: it holds a Redis set, not a JSON info object; fix or delete that key\n"
    )


@pytest.mark.parametrize(
    ("key", "what"),
    [("user-id-map", "a Redis hash"), ("{group}:jobs", "a Redis set"), ("{job}", "a job")],
)
def test_userjobs_of_a_key_that_is_not_a_group(r, alice, key: str, what: str) -> None:
    group_id, job_id = alice
    key = key.format(group=group_id, job=job_id)
    done = run_moi("userjobs", "--key", key)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"{key} is {what}, not a group; give a user name or a group id\n"


def test_a_user_map_of_the_wrong_type_is_named(r) -> None:
    r.set("user-id-map", "{}")
    done = run_moi("userjobs", "--key", "alice")
    assert done.returncode == 1
    assert done.stderr.startswith("Key user-id-map holds a bad document: it holds a Redis string, not a hash")


def test_get_many_skips_a_bad_document_and_reports_it(r, store, alice) -> None:
    group_id, good_id = alice
    bad_id, _ = plant(r, group_id, "not JSON")
    bad: list[BadDocument] = []

    infos = store.get_many([bad_id, good_id, str(uuid.uuid4())], bad)

    assert [info["id"] for info in infos] == [good_id]
    assert [error.key for error in bad] == [bad_id]
    assert [info["id"] for info in store.get_many([bad_id, good_id])] == [good_id]  # logged, not raised


def test_update_many_leaves_out_a_node_overwritten_with_garbage(r, store, alice) -> None:
    group_id, good_id = alice
    other_id = add_job(store, group_id)
    known = {info["id"]: info for info in store.get_many([good_id, other_id])}
    r.set(other_id, "garbage")  # after we read it: the compare-and-set finds it changed

    def mark(info):
        return {**info, "status": "Running"}

    outcome = store.update_many([(good_id, mark, known[good_id]), (other_id, mark, known[other_id])])

    assert list(outcome) == [good_id]
    assert json.loads(r.get(good_id))["status"] == "Running"
    assert r.get(other_id) == "garbage"


def test_a_refused_command_is_redis_refused_not_unreachable(store) -> None:
    with pytest.raises(RedisRefused, match="refused a command: unknown command") as refused, reaching(store.url):
        store.redis.execute_command("MOI-NO-SUCH-COMMAND")
    assert "unreachable" not in str(refused.value)


def test_cli_on_a_database_redis_refuses_says_refused(redis_url) -> None:
    parts = urlsplit(redis_url)
    out_of_range = urlunsplit(parts._replace(path="/999"))
    done = run_moi("job", "--job-id", str(uuid.uuid4()), env={"MOI_REDIS_URL": out_of_range})
    assert done.returncode == 1
    assert "unreachable" not in done.stderr and "Traceback" not in done.stderr
    assert "refused a command: DB index is out of range" in done.stderr and done.stderr.count("\n") == 1
    if parts.password:
        assert parts.password not in done.stderr  # the URL is shown masked


def test_stored_checked_keeps_the_text_and_refuses_a_bad_document() -> None:
    job_id = str(uuid.uuid4())
    text = good(job_id)
    stored = Stored.checked(job_id, text, job_id)
    assert (stored.text, stored["id"]) == (text, job_id)
    for document, problem in BAD_DOCUMENTS.values():
        with pytest.raises(BadDocument, match=re.escape(problem)):
            Stored.checked(job_id, document(job_id), job_id)


def test_submit_under_a_group_whose_jobs_key_is_wrong_names_it(r, alice) -> None:
    group_id, _ = alice
    r.delete(f"{group_id}:jobs")
    r.set(f"{group_id}:jobs", "not a set")
    kept_before = kept(r)
    done = run_moi("submit", "--user", "alice", "--cmd", "return 1")
    assert (done.returncode, done.stdout) == (1, "")
    assert kept(r) == kept_before  # nothing half-written
    assert done.stderr == (
        f"Key {group_id}:jobs holds a bad document: it holds a Redis string, not a set of ids; fix or delete that key\n"
    )
