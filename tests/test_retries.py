"""Retries and redelivery, for real: a job that fails twice then succeeds, a failure retry_on is not for, a
retry cancelled while it waits, and idempotent jobs whose engine is SIGKILLed, or SIGSTOPped past its
heartbeat and continued once another engine runs the job's next attempt (its attempt is interrupted, and
nothing of it recorded)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from moi.compute.watchdog import Watchdog
from moi.core.info import Status, is_finished
from moi.job import cancel, pause, resume, submit
from moi.queue.retries import Retries
from tests import jobs, retry_jobs
from tests.conftest import finished, until
from tests.test_time_limits import label_of

LATER = 10_000.0  # seconds: a moment when every retry is due


def test_a_job_that_fails_twice_then_succeeds_keeps_its_id_and_its_attempts(store) -> None:
    job_id, _, handle = submit(
        "default", "retry-user", "flaky", None, retry_jobs.fails_until, 3, retries=3, retry_on=OSError, backoff=0.2
    )
    assert handle.get(timeout=90) == 3  # the handle waits through the retries
    info = store.get(job_id)
    assert (info["status"], info["attempt"], info["max_attempts"]) == (Status.SUCCESS, 3, 4), info
    assert [entry["attempt"] for entry in info["attempts"]] == [1, 2]
    for entry in info["attempts"]:
        assert entry["result_format"] == "traceback" and "OSError: attempt" in entry["result"], entry
        assert entry["engine"] and entry["date_start"] and entry["date_end"]
    assert "retry_at" not in info
    assert store.redis.zscore(store.keys.retry("default"), job_id) is None
    assert not store.redis.sismember(store.keys.active(info["owner"]), job_id)  # counted once, and done


def test_a_failure_retry_on_is_not_for_fails_at_once(store) -> None:
    job_id, _, handle = submit(
        "default", "retry-user", "picky", None, retry_jobs.value_error, retries=3, retry_on=["OSError", 75]
    )
    with pytest.raises(ValueError, match="not a failure retry_on names"):
        handle.get(timeout=60)
    info = store.get(job_id)
    assert (info["status"], info["attempt"]) == (Status.FAILED, 1) and "attempts" not in info, info


def test_a_retry_cancelled_while_it_waits_never_runs_again(store) -> None:
    job_id, _, _ = submit("default", "retry-user", "waits", None, retry_jobs.fails_until, 99, retries=3, backoff=600)
    info = until(lambda: (found := store.get(job_id))["attempt"] == 2 and found, "the first attempt failed")
    assert info["status"] == Status.QUEUED and info["retry_at"] > time.time() + 200, info
    assert store.redis.zscore(store.keys.retry("default"), job_id) == info["retry_at"]
    assert store.redis.sismember(store.keys.active(info["owner"]), job_id)  # still the owner's, once

    assert cancel(job_id).cancelled == [job_id]
    assert Retries(store).promote(moment=time.time() + LATER) == 0  # due or not, it is gone from the retry set
    info = store.get(job_id)
    assert (info["status"], info["result"]) == (Status.CANCELLED, "Cancelled before it started"), info
    assert store.redis.zscore(store.keys.queue("default"), job_id) is None
    assert not store.redis.sismember(store.keys.active(info["owner"]), job_id)


def test_a_retry_due_while_its_owner_is_paused_is_held(store) -> None:
    job_id, _, _ = submit("default", "paused-retry", "held", None, retry_jobs.fails_until, 2, retries=1, backoff=600)
    until(lambda: store.get(job_id)["attempt"] == 2, "the first attempt failed")
    pause(user="paused-retry")
    assert Retries(store).promote(moment=time.time() + LATER) == 0
    info = store.get(job_id)
    assert info["status"] == Status.PAUSED and store.redis.zscore(store.keys.held("default"), job_id) is not None
    resume(user="paused-retry")
    info = finished(job_id)
    assert (info["status"], info["result"], info["attempt"]) == (Status.SUCCESS, 2, 2), info


def watch(store, done, timeout: float = 60) -> dict:
    """What a watchdog does, with a short grace (the engines here beat with a 2s TTL), until ``done(info)``."""
    watchdog = Watchdog(store, grace=0.3)
    retries = Retries(store)

    def step():
        watchdog.check()
        retries.promote()
        return done()

    return until(step, "the watchdog's passes moved the job on", timeout)


def test_an_idempotent_job_whose_engine_is_killed_succeeds_on_another(store, spare, tmp_path) -> None:
    first = spare("first")
    (tmp_path / "release-2").touch()  # the second attempt returns at once; the first waits for ever
    job_id, _, handle = submit(
        "spare", "retry-user", "idem", None, retry_jobs.attempt_then_wait, str(tmp_path),
        idempotent=True, retries=1, backoff=0.2,
    )  # fmt: skip
    until(lambda: (tmp_path / "started-1").exists(), "the first attempt started")
    assert store.get(job_id)["engine"] == label_of(first)
    second = spare("second")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)

    watch(store, lambda: is_finished(store.get(job_id)))
    assert handle.get(timeout=10) == "attempt 2"
    info = store.get(job_id)
    assert (info["status"], info["attempt"], info["engine"]) == (Status.SUCCESS, 2, label_of(second)), info
    lost = info["attempts"][0]
    assert lost["attempt"] == 1 and lost["engine"] == label_of(first) and lost["result"].startswith("Engine lost:")


def test_a_late_result_of_a_stopped_engine_never_overwrites_the_next_attempt(store, spare, tmp_path) -> None:
    first = spare("first")
    job_id, _, _ = submit(
        "spare", "retry-user", "race", None, retry_jobs.attempt_then_wait, str(tmp_path),
        idempotent=True, retries=1, backoff=0.2,
    )  # fmt: skip
    until(lambda: (tmp_path / "started-1").exists(), "the first attempt started")
    second = spare("second")
    seen = [store.get(job_id)["revision"]]
    os.kill(first.pid, signal.SIGSTOP)  # past its heartbeat: the watchdog queues the job again
    try:
        until(lambda: not store.redis.exists(store.keys.heartbeat(job_id)), "the heartbeat expired", 30)
        info = watch(store, lambda: (tmp_path / "started-2").exists() and store.get(job_id))
        assert (info["status"], info["attempt"], info["engine"]) == (Status.RUNNING, 2, label_of(second)), info
        assert info["attempts"][0]["result"].startswith("Engine lost:")
        seen.append(info["revision"])
    finally:
        os.kill(first.pid, signal.SIGCONT)

    # The first engine, at its next beat, finds the heartbeat another's: its attempt is interrupted (its function
    # never gets to return: no release-1 comes), records nothing, and the engine takes this probe: it is free again.
    probe, _, _ = submit("spare", "retry-user", "probe", None, jobs.add, 1, 2)
    assert finished(probe)["engine"] == label_of(first)
    assert not (tmp_path / "finished-1").exists()
    info = store.get(job_id)
    assert (info["status"], info["attempt"], info["revision"]) == (Status.RUNNING, 2, seen[-1]), info
    assert store.redis.get(store.keys.heartbeat(job_id)) == label_of(second)  # the running attempt's keys stay
    assert store.redis.sismember(store.keys.running, job_id)
    log = Path(tmp_path / "first.log").read_text()
    assert f"job {job_id}: a newer attempt owns it now" in log, log
    assert f"job {job_id}: attempt 1 was superseded by a newer one; interrupting it" in log, log

    (tmp_path / "release-2").touch()
    info = finished(job_id)
    assert (info["status"], info["result"], info["attempt"]) == (Status.SUCCESS, "attempt 2", 2), info
    assert info["revision"] > seen[-1] and seen == sorted(seen)
    assert not store.redis.exists(store.keys.heartbeat(job_id)) and not store.redis.sismember(
        store.keys.running, job_id
    )


def test_batch_items_retry_and_end_on_their_own_limits(store, monkeypatch, tmp_path) -> None:
    import moi.jobs.batch
    from moi.core.policy import Policy
    from moi.job import submit_many

    made = moi.jobs.batch._new_job

    def with_policy(policy: Policy):  # each item carries the fields, as submit_many's own options will put them
        monkeypatch.setattr(moi.jobs.batch, "_new_job", lambda *args: {**made(*args), **policy.fields()})

    with_policy(Policy(retries=2, backoff=0.2))
    flaky, _, batch = submit_many("default", "batch-retry", "flaky", None, retry_jobs.fails_once,
                                  [(str(tmp_path), n) for n in range(3)])  # fmt: skip
    with_policy(Policy(time_limit=2))
    slow, _, _ = submit_many("default", "batch-retry", "slow", None, retry_jobs.sleep_long, [3600, 0.1])

    assert batch.get(timeout=90) == [0, 1, 2]
    for job_id in flaky:
        info = store.get(job_id)
        assert (info["status"], info["attempt"], len(info["attempts"])) == (Status.SUCCESS, 2, 1), info
        assert "OSError: item" in info["attempts"][0]["result"]
    over, within = finished(slow[0]), finished(slow[1])
    assert (over["status"], over["result"]) == (Status.FAILED, "Time limit of 2s exceeded"), over
    assert (within["status"], within["result"]) == (Status.SUCCESS, 0.1), within
    assert not any(store.redis.smismember(store.keys.running, [*flaky, *slow]))
