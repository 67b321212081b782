"""Batches: submit_many and ``moi submit --each``, against the session's Redis and cluster."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from moi.core.info import new_info
from moi.jobs.batch import submit_many
from moi.storage.store import set_fields
from tests import batch_jobs
from tests.conftest import finished, run_moi


def _drain(pubsub: Any, until: float = 0.5) -> list[tuple[str, dict[str, list[str]]]]:
    """Every message published until none came for ``until`` seconds (bounded to 30 s)."""
    messages = []
    deadline = time.monotonic() + 30
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < until:
        # None also stands for a skipped subscribe reply: only silence ends the wait.
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            messages.append((message["channel"], json.loads(message["data"])))
            last = time.monotonic()
    return messages


def test_every_item_is_its_own_job_and_succeeds(r, store) -> None:
    items = [(a, 2) for a in range(10)]
    job_ids, group_id, batch = submit_many("default", "sweeper", "halves", "/sweep", batch_jobs.divide, items)

    assert batch.get(timeout=60) == [a / 2 for a in range(10)]
    assert len(set(job_ids)) == 10
    assert r.smembers(f"{group_id}:jobs") == set(job_ids)
    infos = [finished(job_id) for job_id in job_ids]
    for index, info in enumerate(infos):
        assert (info["status"], info["result"], info["type"]) == ("Success", index / 2, "job")
        assert (info["name"], info["parent"], info["url"]) == (f"halves [{index}]", group_id, "/sweep")
        assert info["date_start"] <= info["date_end"]
    assert not any(r.zscore(store.keys.queue("default"), job_id) for job_id in job_ids)  # taken: out of the queue


def test_a_failing_item_fails_alone(r, store) -> None:
    job_ids, _, batch = submit_many("default", "sweeper", "ratios", None, batch_jobs.divide, [(1, 1), (1, 0), (3, 1)])

    assert batch.get(timeout=60) == [1.0, None, 3.0]
    first, broken, last = (finished(job_id) for job_id in job_ids)
    assert (first["status"], last["status"]) == ("Success", "Success")
    assert broken["status"] == "Failed"
    assert "ZeroDivisionError" in broken["result"]


def test_items_are_announced_and_show_their_progress_live(r, store, tmp_path) -> None:
    group_id = store.ensure_group("watcher")
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("*:pubsub")
    release = tmp_path / "release"

    job_ids, _, batch = submit_many("default", "watcher", "p", None, batch_jobs.announce_and_wait, [str(release)] * 2)
    for job_id in job_ids:  # each engine's item: its status text is published while it runs
        deadline = time.monotonic() + 60  # a bound on a hang
        while store.get(job_id)["status"] != "waiting for the release file":
            assert time.monotonic() < deadline, store.get(job_id)
            time.sleep(0.05)
    release.touch()
    assert batch.get(timeout=60) == ["released", "released"]
    messages = _drain(pubsub)
    pubsub.close()

    added = [ids for channel, body in messages if channel == f"{group_id}:pubsub" for ids in body["add"]]
    assert added == job_ids
    updates = Counter(body["update"][0] for channel, body in messages if "update" in body)
    assert all(updates[job_id] >= 2 for job_id in job_ids), updates  # Running with its text, then Success


def test_what_an_item_went_through_within_one_interval_is_written_once(r, store) -> None:
    from moi.compute.block_recorder import Recorder
    from moi.core.info import Status
    from moi.queue.jobqueue import Queue

    infos = [new_info(name, name, "job", f"{name}:pubsub") for name in ("quick", "slow")]
    Queue(store).enqueue("recorder", "nowhere", [(info, "", 0) for info in infos])
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("quick:pubsub", "slow:pubsub")
    recorder = Recorder(store, infos, interval=3600)  # only the flushes below write

    recorder.record("quick", set_fields(status=Status.RUNNING))
    recorder.record("quick", set_fields(status="half way"))
    recorder.finish("quick", Status.SUCCESS, 1, "json")
    recorder.record("slow", set_fields(status=Status.RUNNING))
    recorder.flush()
    recorder.record("slow", set_fields(status="half way"))
    recorder.flush()
    recorder.finish("slow", Status.SUCCESS, 2, "json")
    recorder.flush()

    updates = Counter(channel for channel, _ in _drain(pubsub))
    pubsub.close()
    assert updates == {"quick:pubsub": 1, "slow:pubsub": 3}
    assert [(store.get(name)["status"], store.get(name)["result"]) for name in ("quick", "slow")] == [
        (Status.SUCCESS, 1),
        (Status.SUCCESS, 2),
    ]


def test_a_plain_value_is_the_single_argument(r, store) -> None:
    job_ids, _, batch = submit_many("default", "sweeper", "p", None, batch_jobs.progress, [0, 1])
    assert batch.get(timeout=60) == [0, 1]
    assert [finished(job_id)["status"] for job_id in job_ids] == ["Success", "Success"]


def test_update_many_merges_a_concurrent_change_and_skips_removed_nodes(r, store) -> None:
    kept, removed = (new_info(name, name, "job", f"{name}:pubsub") for name in ("kept", "removed"))
    group_id = store.ensure_group("merger")
    store.add_nodes(group_id, [kept, removed])
    store.update("kept", set_fields(note="from elsewhere"))  # our copy of "kept" is now stale
    r.delete("removed")

    outcome = store.update_many(
        [("kept", set_fields(status="Running"), kept), ("removed", set_fields(status="Running"), removed)]
    )

    assert set(outcome) == {"kept"}
    now = json.loads(r.get("kept"))
    assert (now["status"], now["note"], now["revision"]) == ("Running", "from elsewhere", 2)


@pytest.mark.parametrize("block", [False, True])
def test_cli_submit_each_runs_one_job_per_line(r, tmp_path, block: bool) -> None:
    commands = tmp_path / "commands.txt"
    commands.write_text("echo one\n\n# a comment\necho two\nexit 3\n")

    done = run_moi("submit", "--each", str(commands), "--user", "shell", *(["--block"] if block else []))

    assert done.returncode == (3 if block else 0), done.stderr  # 3: an item (exit 3) ended Failed
    job_ids = [line.split(": ")[1] for line in done.stdout.splitlines() if line.startswith("Submitted job id: ")]
    assert len(job_ids) == 3
    infos = [finished(job_id) for job_id in job_ids]
    assert [info["status"] for info in infos] == ["Success", "Success", "Failed"]
    assert infos[0]["result"] == ["one\n", "", 0]
    assert "returncode: 3" in infos[2]["result"]
    if block:
        assert done.stdout.count("**********") == 6  # three blocks, a header line each
        assert "status\t\t: Failed" in done.stdout


def test_cli_submit_each_refuses_an_empty_file_and_both_options(r, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    assert "holds no commands" in run_moi("submit", "--each", str(empty)).stderr
    both = run_moi("submit", "--each", str(empty), "--cmd", "return 1")
    assert both.returncode != 0
    assert "not both" in both.stderr


def test_items_the_engine_cannot_load_fail_each_with_the_reason(r, store, tmp_path, monkeypatch) -> None:
    # An argument of a class only this process can import: each item fails, saying so; the engine goes on.
    (tmp_path / "only_here_batch.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_batch  # type: ignore[import-not-found]

    items = [(only_here_batch.Thing(), 1)] * 3
    job_ids, _, batch = submit_many("default", "loader", "unloadable", None, batch_jobs.divide, items)
    batch.wait(60)
    for job_id in job_ids:
        info = finished(job_id)
        assert info["status"] == "Failed" and info["result"].startswith("Never started: engine"), info
        assert "only_here_batch" in info["result"]
    assert submit_many("default", "loader", "fine", None, batch_jobs.divide, [(4, 2)])[2].get(timeout=60) == [2.0]


def test_a_function_the_engine_cannot_import_fails_each_job_with_the_reason(r, tmp_path, monkeypatch) -> None:
    # Module-level functions travel by name: each job fails with the import error, in its own traceback.
    (tmp_path / "only_here_func.py").write_text("def job(x, **kwargs):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_func  # type: ignore[import-not-found]

    job_ids, _, batch = submit_many("default", "loader", "unimportable", None, only_here_func.job, [1, 2])
    batch.wait(60)
    for job_id in job_ids:
        info = finished(job_id)
        assert info["status"] == "Failed" and "No module named 'only_here_func'" in info["result"], info
