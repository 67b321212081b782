"""Retries against what goes wrong around them: an unreadable entry in a retry set, odd values written into a
job's info behind moi's back, a cancel asked as an attempt fails, a job directory moved before the job runs,
``moi watchdog --once`` with a retry due; and the policy's own checks, which need no cluster."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator

import pytest

from moi.cli.output import format_info
from moi.core.errors import InvalidValue
from moi.core.info import Status, new_id
from moi.core.policy import LONGEST, MOST_RETRY_ON, Policy, delay_before, next_attempt
from moi.job import cancel, pause, resume, submit
from moi.jobfiles.directory import directory_of
from moi.jobs.job_policy import policy_fields
from moi.storage import loops
from moi.storage.store import set_fields
from moi.upkeep import passes
from tests import retry_jobs
from tests.conftest import finished, run_moi, until


@pytest.fixture
def elsewhere(store) -> Iterator[list[str]]:
    """Contexts with no engine, named by the test (``nowhere``, ``odd``), and their keys removed afterwards."""
    contexts: list[str] = []
    yield contexts
    keys = store.keys
    for context in contexts:
        store.redis.delete(keys.retry(context), keys.queue(context), keys.held(context))
        store.redis.srem(keys.retrying, context)


def waiting(store, context: str) -> str:
    """A job document, Queued in ``context`` and due for its next attempt now (no call: no engine takes it)."""
    job_id = new_id()
    info = {"revision": 1, "id": job_id, "type": "job", "status": "Queued", "context": context, "priority": 0}
    store.redis.set(store.keys.info(job_id), json.dumps(info), ex=600)
    store.redis.zadd(store.keys.retry(context), {job_id: time.time() - 1})
    store.redis.sadd(store.keys.retrying, context)
    return job_id


def test_an_unreadable_entry_in_a_retry_set_stalls_nothing(store, elsewhere) -> None:
    bad = new_id()
    store.redis.hset(store.keys.info(bad), "status", "Queued")  # a hash where moi keeps a job's document
    store.redis.expire(store.keys.info(bad), 600)
    store.redis.zadd(store.keys.retry("default"), {bad: 0})
    store.redis.sadd(store.keys.retrying, "default")
    job_id, _, handle = submit(
        "default", "retry-user", "beside", None, retry_jobs.fails_until, 2, retries=1, retry_on=OSError, backoff=0.2
    )
    assert handle.get(timeout=60) == 2  # its retry went through the same retry set, past the bad entry
    assert store.redis.zscore(store.keys.retry("default"), bad) is None  # dropped, as TAKE drops such an entry
    assert store.redis.type(store.keys.info(bad)) == "hash"  # and left as it was

    # One context's trouble (a queue key of another type) costs the watchdog's pass only that context.
    elsewhere += ["odd", "nowhere"]
    store.redis.set(store.keys.queue("odd"), "not a queue", ex=600)
    stuck, due = waiting(store, "odd"), waiting(store, "nowhere")
    before = loops.read(store).get("watchdog", loops.Record()).errors
    passes.retries_logging(store)
    assert store.redis.zscore(store.keys.queue("nowhere"), due) is not None
    assert store.redis.zscore(store.keys.retry("odd"), stuck) is not None  # tried again at the next pass
    assert loops.read(store)["watchdog"].errors > before
    store.redis.delete(store.keys.info(bad), store.keys.info(stuck), store.keys.info(due))


def test_odd_values_in_a_jobs_info_never_leave_it_stuck(store) -> None:
    user = "odd-values"
    store.ensure_group(user)
    pause(user=user)
    try:
        flaky, _, _ = submit("default", user, "flaky", None, retry_jobs.fails_until, 2, retries=1, backoff=0.2)
        far, _, _ = submit("default", user, "far", None, retry_jobs.fails_until, 99, retries=1, backoff=0.2)
        odd, _, _ = submit("default", user, "odd", None, retry_jobs.fails_until, 99, retries=1, backoff=0.2)
        store.update(flaky, set_fields(attempts=5, backoff=[-1, "x"]))  # not a list; no durations: the default
        store.update(far, set_fields(attempts={"x": 1}, backoff=[1e300, 1e300]))  # waits no longer than Redis keeps it
        store.update(odd, set_fields(attempt="1"))  # no attempt moi can count from: no retry
    finally:
        resume(user=user)
    info = finished(flaky)
    assert (info["status"], info["attempt"], len(info["attempts"])) == (Status.SUCCESS, 2, 1), info
    info = finished(odd)
    assert (info["status"], info["attempt"]) == (Status.FAILED, "1") and "OSError" in info["result"], info
    info = until(lambda: (found := store.get(far))["attempt"] == 2 and found, "the far job's first attempt failed")
    assert info["status"] == Status.QUEUED and len(info["attempts"]) == 1, info
    assert time.time() < info["retry_at"] < time.time() + store.ttl, info
    assert store.redis.zscore(store.keys.retry("default"), far) == info["retry_at"]
    assert cancel(far).cancelled == [far]


def test_a_cancel_asked_as_an_attempt_fails_is_not_lost_to_its_retry(store) -> None:
    job_id, _, _ = submit(
        "default", "retry-user", "self-cancel", None, retry_jobs.cancels_itself_then_fails, retries=2, backoff=0.2
    )
    info = finished(job_id)
    assert (info["status"], info["result"], info["attempt"]) == (Status.CANCELLED, "Cancelled while running", 1), info
    assert "attempts" not in info and "retry_at" not in info
    assert store.redis.zscore(store.keys.retry("default"), job_id) is None
    assert not store.redis.exists(store.keys.cancel(job_id))
    assert not store.redis.sismember(store.keys.running, job_id)


def test_a_job_runs_where_its_info_says_its_directory_moved(store, tmp_path) -> None:
    user = "moved-directory"
    store.ensure_group(user)
    pause(user=user)
    try:
        job_id, _, _ = submit("default", user, "moved", None, retry_jobs.here, workdir=True)
        moved = os.path.join(os.path.realpath(tmp_path), "running", job_id)
        os.makedirs(os.path.dirname(moved))
        os.rename(directory_of(job_id), moved)  # as a service's per-state roots move it
        store.update(job_id, set_fields(directory=moved))
    finally:
        resume(user=user)
    info = finished(job_id)
    assert (info["status"], info["result"]) == (Status.SUCCESS, moved), info


def test_watchdog_once_queues_due_retries(store, elsewhere) -> None:
    elsewhere.append("nowhere")
    due = waiting(store, "nowhere")
    done = run_moi("watchdog", "--once")
    assert done.returncode == 0, done.stderr
    assert "job(s) due for their next attempt" in done.stdout, done.stdout
    assert store.redis.zscore(store.keys.queue("nowhere"), due) is not None
    store.redis.delete(store.keys.info(due))


# the policy's own checks: no cluster --------------------------------------------------------------------------------


def refused(naming: str, **asked) -> str:
    with pytest.raises(InvalidValue) as error:
        Policy(**asked).fields()
    text = str(error.value)
    assert "\n" not in text and naming in text, text
    return text


def test_idempotent_needs_retries() -> None:
    assert "idempotent needs retries of 1 or more" in refused("idempotent", idempotent=True)
    refused("idempotent", idempotent=True, retries=0)
    assert Policy(idempotent=True, retries=1).fields()["max_attempts"] == 2


def test_retry_on_is_a_list_of_names_or_codes_and_not_too_long() -> None:
    refused("retry_on", retries=1, retry_on=b"OSError")  # not exit codes 79, 83, ...
    refused("retry_on", retries=1, retry_on={"OSError": 1})
    refused("retry_on", retries=1, retry_on=(name for name in ["OSError"]))
    assert f"give at most {MOST_RETRY_ON}" in refused("retry_on", retries=1, retry_on=[75] * (MOST_RETRY_ON + 1))
    assert Policy(retries=1, retry_on=("OSError", 75)).fields()["retry_on"] == ["OSError", 75]
    assert Policy(retries=1, retry_on={OSError}).fields()["retry_on"] == ["OSError"]


def test_a_backoff_longer_than_the_ttl_is_refused(store) -> None:
    with pytest.raises(InvalidValue, match="backoff.*longer than the 2w moi keeps a job"):
        policy_fields(Policy(retries=1, backoff="1s,30d"), "default")
    assert policy_fields(Policy(retries=1, backoff="1s,1d"), "default")["backoff"] == [1.0, 86400.0]


def test_odd_stored_values_make_sane_retries() -> None:
    for backoff in ([1, math.nan], [math.inf, math.inf], [-1, 5], [True, 2], "1s", None):
        delay = delay_before({"attempt": 3, "backoff": backoff})
        assert math.isfinite(delay) and 0 <= delay <= 600, (backoff, delay)
    assert delay_before({"attempt": 1, "backoff": [1e300, 1e300]}, longest=100) <= 100
    assert delay_before({"attempt": 60, "backoff": [1e300, 1e300]}) <= LONGEST
    for attempts in (5, {"a": 1}, "x", None):
        info = next_attempt({"attempt": 1, "attempts": attempts}, {"result": "no"}, 0.0)
        assert [entry["attempt"] for entry in info["attempts"]] == [1] and info["attempt"] == 2
    shown = format_info({"id": "x", "retry_at": 1e300, "backoff": ["x", 1], "status": "Queued", "attempt": 2})
    assert "1e+300" in shown and "['x', 1]" in shown
    assert "nan" in format_info({"id": "x", "retry_at": math.nan, "backoff": [math.nan, 1]})
