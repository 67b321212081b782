"""Time limits enforced on the engine, for real: a Python job and a shell command past their limit, a soft
limit caught, and a job that will not stop, whose engine (one of the test's own) is stopped."""

from __future__ import annotations

import socket
from pathlib import Path

from moi.core.info import Status
from moi.job import submit, system_call
from tests import fault_jobs, retry_jobs
from tests.conftest import finished, until


def group_alive(pgid: int) -> list[int]:
    """The processes (not zombies) of process group ``pgid``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def test_python_and_shell_jobs_past_their_limit_fail_and_free_their_engines(store, tmp_path) -> None:
    python_id, _, _ = submit("default", "limits", "sleeps", None, retry_jobs.sleep_long, 3600, time_limit=3)
    cmd = f"echo $$ > {tmp_path}/pgid; sleep 3600 & sleep 3600"
    shell_id, _, _ = submit("default", "limits", "shell", None, system_call, cmd, time_limit="3s")

    python_job = finished(python_id)
    assert (python_job["status"], python_job["result"]) == (Status.FAILED, "Time limit of 3s exceeded"), python_job
    assert python_job["result_format"] == "text"
    shell_job = finished(shell_id)
    assert (shell_job["status"], shell_job["result"]) == (Status.FAILED, "Time limit of 3s exceeded"), shell_job
    pgid = int((tmp_path / "pgid").read_text())
    assert until(lambda: not group_alive(pgid), "the command's process group ended", 30)
    assert not store.redis.exists(store.keys.heartbeat(python_id), store.keys.heartbeat(shell_id))
    assert not store.redis.sismember(store.keys.running, python_id)

    # Both engines are free again: each runs one of these (a job holds its engine half a second).
    engines = {python_job["engine"], shell_job["engine"]}
    quick = [
        submit("default", "limits", f"after {n}", None, fault_jobs.sleep_then_touch, 0.5, str(tmp_path / f"m{n}"))
        for n in range(6)
    ]
    ran_on = {finished(job_id)["engine"] for job_id, _, _ in quick}
    assert engines <= ran_on, (engines, ran_on)


def test_a_soft_limit_warns_the_job_which_may_catch_it(store) -> None:
    caught, _, handle = submit(
        "default", "limits", "warned", None, retry_jobs.warned_in_time, soft_time_limit=2, time_limit=60
    )
    uncaught, _, _ = submit("default", "limits", "unwarned", None, retry_jobs.sleep_long, 60, soft_time_limit="2s")
    assert handle.get(timeout=60) == "warned"
    assert finished(caught)["status"] == Status.SUCCESS
    info = finished(uncaught)
    assert (info["status"], info["result"]) == (Status.FAILED, "Soft time limit of 2s exceeded"), info


def label_of(engine) -> str:
    return f"{socket.gethostname()}:{engine.pid}"


def test_a_job_that_will_not_stop_is_failed_and_its_engine_ends(store, spare, tmp_path) -> None:
    engine = spare("stubborn")  # its grace after a hard limit is 1s
    job_id, _, _ = submit("spare", "limits", "stubborn", None, retry_jobs.ignores_time_limit, time_limit=1)
    info = finished(job_id)
    assert info["status"] == Status.FAILED, info
    assert info["result"].startswith("Time limit of 1s exceeded; the job went on for"), info
    assert info["result"].endswith(f"so its engine {label_of(engine)} was stopped"), info
    assert engine.wait(30) == 75  # it ended itself, for its cluster to start another
    assert not store.redis.sismember(store.keys.running, job_id)
