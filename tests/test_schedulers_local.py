"""Scheduler contexts on this machine without a batch scheduler (``scheduler = local``): each job a process of its
own, followed by its context's poller as any scheduler job is. The same paths as Slurm's, cheap enough for every run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import moi.jobs.connections
from moi import services
from moi.compute.schedulers import script
from moi.compute.schedulers.adapters import GridEngine, LocalProcess
from moi.compute.schedulers.following import MOST_REASONS_PER_POLL, Follow
from moi.compute.schedulers.handing import Hand
from moi.compute.schedulers.runner import LocalRunner
from moi.core.config import build_settings
from moi.core.errors import CodeRefused, ConfigError, InvalidValue
from moi.job import cancel, get_info, submit, system_call
from moi.jobfiles.directory import directory_of
from moi.jobs.submit import relaunch
from moi.relay.node_removal import remove_nodes
from tests import service_defs
from tests.conftest import finished, until
from tests.retry_jobs import start_engine
from tests.test_inputs_policy import settings


def scripted_sum(a: int, b: int, status_update=None) -> int:
    if status_update is not None:
        status_update("adding")
    return a + b


def breaks() -> None:
    raise ValueError("no good")


@pytest.fixture
def here(store, tmp_path):
    """A scheduler context named ``here``: jobs as processes on this machine, polled every 0.2 s."""
    moi.jobs.connections.configure(schedulers={"here": {"scheduler": "local", "poll": "0.2"}})
    yield store
    moi.jobs.connections.configure(schedulers={})


def test_a_shell_job_runs_as_its_own_process_and_its_exit_code_decides(here) -> None:
    ok, _, _ = submit("here", "alice", "ok", None, system_call, "echo made here; pwd")
    bad, _, _ = submit("here", "alice", "bad", None, system_call, "echo oops >&2; exit 3")
    done = finished(ok, timeout=60)
    assert done["status"] == "Success", done
    assert "made here" in done["result"] and directory_of(ok) in done["result"]
    assert done["scheduler"]["kind"] == "local" and done["scheduler"]["exit_code"] == 0
    failed = finished(bad, timeout=60)
    assert failed["status"] == "Failed" and "exited with code 3" in failed["result"] and "oops" in failed["result"]
    with open(f"{directory_of(bad)}/{script.LOG}") as log:
        assert "oops" in log.read()


def test_a_python_job_returns_its_value_and_its_traceback(here) -> None:
    ok, _, handle = submit("here", "alice", "sum", None, scripted_sum, 2, 3)
    bad, _, _ = submit("here", "alice", "breaks", None, breaks)
    done = finished(ok, timeout=60)
    assert done["status"] == "Success" and done["scheduler"]["status_text"] == "adding"  # its status_update
    assert handle.get(timeout=5) == 5
    failed = finished(bad, timeout=60)
    assert failed["status"] == "Failed" and "ValueError: no good" in failed["result"]


def test_a_cancel_ends_the_process_and_the_job_reads_cancelled(here) -> None:
    job_id, _, _ = submit("here", "alice", "long", None, system_call, "sleep 600")
    until(lambda: get_info(job_id)["status"] == "Running", "the job running", 60)
    cancel(job_id)
    done = finished(job_id, timeout=60)
    assert done["status"] == "Cancelled", done


def test_resources_are_refused_in_one_line_before_anything_is_stored(here, r) -> None:
    for asked, words in (
        ({"memory": "lots"}, "not an amount of memory"),
        ({"cores": -1}, "not a whole number"),
        ({"colour": "red"}, "there is no resource 'colour'"),
        ({"partition": "long\n#SBATCH --uid=0"}, "is not a name"),
    ):
        with pytest.raises(InvalidValue, match=words):
            submit("here", "alice", "x", None, system_call, "true", resources=asked)
    with pytest.raises(InvalidValue, match="runs jobs on its engines"):
        submit(None, "alice", "x", None, system_call, "true", resources={"cores": 2})
    assert not r.keys("moi:queue:*") and not r.exists("moi:scheduled:here")
    limited, _, _ = submit("here", "alice", "limited", None, system_call, "true", time_limit="10m")
    assert get_info(limited)["resources"] == {"walltime": 600}  # moi's time limit, held by the scheduler
    assert finished(limited, timeout=60)["status"] == "Success"


def test_a_job_that_vanishes_without_an_exit_code_fails_saying_so(here) -> None:
    """Its node lost, or killed outside moi: no exit code was written, and the scheduler no longer shows it."""
    job_id, _, _ = submit("here", "alice", "lost", None, system_call, "sleep 600")
    until(lambda: get_info(job_id)["status"] == "Running", "the job running", 60)
    pid = get_info(job_id)["scheduler"]["id"]
    subprocess.run(["kill", "-s", "KILL", "--", f"-{pid}"], check=True)
    done = finished(job_id, timeout=60)
    assert done["status"] == "Failed" and "vanished from the scheduler" in done["result"], done


def test_a_service_of_a_scheduler_context_runs_its_hooks_on_an_engine_and_its_command_there(store, tmp_path) -> None:
    config = tmp_path / "moi.ini"  # the service job's engine knows the scheduler context as this process does
    config.write_text("[context here]\nscheduler = local\npoll = 0.2\n")
    contexts = f"{os.environ['MOI_CONTEXTS']},engines={tmp_path}/none.json"
    env = {"MOI_CONFIG_FP": str(config), "MOI_CONTEXTS": contexts, "MOI_DEFAULT_CONTEXT": "engines"}
    with settings(**env):
        moi.jobs.connections.configure(schedulers={"here": {"scheduler": "local", "poll": "0.2"}})
        engine = start_engine("engines", store.url, 3600, tmp_path / "engine.log")
        services.register(service_defs.RunsThere)
        try:
            job_id, _, _ = services.submit("runs-there", "alice", context=None)
            info = get_info(job_id)
            assert info["run_on"] == {"context": "here", "resources": {"cores": 1}}
            done = finished(job_id, timeout=60)
            assert done["status"] == "Success", (done, (tmp_path / "engine.log").read_text()[-2000:])
            assert Path(directory_of(job_id, done), "after.txt").read_text() == "FROM THE SCHEDULER\n"
        finally:
            services.unregister("runs-there")
            engine.kill()
            engine.wait(30)
    moi.jobs.connections.configure(schedulers={})


def test_a_link_the_job_leaves_is_not_followed_when_moi_reads_its_end(here, tmp_path) -> None:
    secret = tmp_path / "moi-settings.ini"
    secret.write_text("requirepass NOT-FOR-THE-JOB\n")
    command = f"rm -f framework.log; ln -s {secret} framework.log"
    job_id, _, _ = submit("here", "alice", "links", None, system_call, command)
    done = finished(job_id, timeout=60)
    assert done["status"] == "Success" and "NOT-FOR-THE-JOB" not in str(done["result"]), done


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ("scheduler = torque", "scheduler must be one of slurm, sge, local, not 'torque'"),
        ("scheduler = slurm\nhost = login.example", "names a host: give it a workdir there"),
        ("scheduler = slurm\ncolour = red", "has no option 'colour'"),
        ("scheduler = slurm\nmemory = lots", "not an amount of memory"),
        ("scheduler = slurm\nport = 99999", "port must be a port number"),
    ],
)
def test_a_scheduler_context_that_cannot_be_is_one_line_at_start(tmp_path, monkeypatch, section, words) -> None:
    config = tmp_path / "moi.ini"
    config.write_text(f"[context hpc]\n{section}\n")
    monkeypatch.setenv("MOI_CONFIG_FP", str(config))
    with pytest.raises(ConfigError, match=re.escape(words)) as refused:
        build_settings()
    assert "\n" not in str(refused.value) and str(refused.value).startswith("[context hpc]")


def test_a_web_code_job_is_not_relaunched_onto_what_is_now_a_scheduler_context(here) -> None:
    """A code job from when ``here`` ran engines (its info has the sandbox it ran in): on a scheduler there is no
    sandbox, its code would run as moi's own user; refused, as a new one is, for the web and the CLI alike."""
    job_id, _, _ = submit("here", "alice", "once", None, system_call, "true")
    assert finished(job_id)["status"] == "Success"
    here.update(job_id, lambda info: {**info, "sandbox": {"uid": 70000, "network": "none"}})
    for grant in (True, None):
        with pytest.raises(CodeRefused, match="does not run on scheduler context 'here'"):
            relaunch(job_id, web_grant=grant)


def test_a_poll_of_more_ids_than_one_argument_holds_still_sees_its_jobs() -> None:
    """20,000 ids of 8 digits are over the kernel's 128 KiB for one argument: asked in runs, not at once."""
    ids = [str(10_000_000 + n) for n in range(20_000)] + [str(os.getpid())]
    seen = LocalProcess().poll(LocalRunner(), ids)
    assert list(seen) == [str(os.getpid())] and seen[str(os.getpid())].phase == "running"


def _next_poll(store) -> None:
    def polled() -> str:
        return str(json.loads(store.redis.get(store.keys.scheduler_seen("here")))["polled"])

    before = polled()
    until(lambda: polled() != before, "one more poll", 30)


def _alive(pid: str) -> bool:
    return pid in LocalProcess().poll(LocalRunner(), [pid])


async def _remove_as_the_websocket_does(store, job_id: str) -> None:
    """The node deleted from Redis, without a cancel first (the API's delete cancels, then removes at once)."""
    client = aioredis.from_url(store.url, decode_responses=True)
    try:
        await remove_nodes(client, store.keys, [job_id])
    finally:
        await client.aclose()


def test_a_job_removed_while_it_runs_has_its_process_ended(here) -> None:
    """Its info gone, the poller still knows its scheduler id (the worklist): the cluster job is cancelled, not
    left to run to its walltime outside every quota."""
    job_id, _, _ = submit("here", "alice", "long", None, system_call, "sleep 600")
    until(lambda: get_info(job_id)["status"] == "Running", "the job running", 60)
    pid = get_info(job_id)["scheduler"]["id"]
    asyncio.run(_remove_as_the_websocket_does(here, job_id))
    until(lambda: not _alive(pid), "the removed job's process ended", 30)
    until(lambda: not here.redis.hexists(here.keys.scheduled("here"), job_id), "the job forgotten", 30)


def test_a_command_that_cannot_be_written_fails_its_job_rather_than_leave_it_submitting(here) -> None:
    job_id, _, _ = submit("here", "alice", "surrogate", None, system_call, "echo \udc80")
    done = finished(job_id, timeout=60)
    assert done["status"] == "Failed" and "could not be handed to its scheduler" in done["result"], done
    assert not here.redis.hexists(here.keys.scheduled("here"), job_id)


def test_a_job_left_submitting_without_an_id_fails_naming_what_to_look_for(here) -> None:
    """moi stopped while handing the job over: SUBMITTING, no scheduler id, first seen long ago (as the poller notes
    it). It fails, naming the moi-<id> it may have reached the cluster as, rather than stay Queued for ever."""
    job_id, _, _ = submit("here", "alice", "cut short", None, system_call, "sleep 600")
    until(lambda: get_info(job_id)["status"] == "Running", "the job running", 60)
    pid = get_info(job_id)["scheduler"]["id"]
    stuck = {"kind": "local", "state": "SUBMITTING", "stuck_since": time.time() - 3600}
    worklist = here.keys.scheduled("here")
    here.update(job_id, lambda info: {**info, "scheduler": stuck}, also=[["HSET", worklist, job_id, ""]])
    failed = finished(job_id, timeout=60)
    subprocess.run(["kill", "-s", "TERM", "--", f"-{pid}"], check=False)
    assert failed["status"] == "Failed" and f"as moi-{job_id}" in failed["result"], failed
    assert not here.redis.hexists(worklist, job_id)


def test_a_job_whose_scheduler_id_is_not_one_fails_alone(here) -> None:
    """A document moi did not write (scheduler id "abc"): sent to squeue, it would make every job read vanished."""
    good, _, _ = submit("here", "alice", "good", None, system_call, "sleep 600")
    bad, _, _ = submit("here", "alice", "bad", None, system_call, "sleep 600")
    until(lambda: get_info(good)["status"] == get_info(bad)["status"] == "Running", "both running", 60)
    bad_pid = get_info(bad)["scheduler"]["id"]
    here.update(bad, lambda info: {**info, "scheduler": {**info["scheduler"], "id": "abc"}})
    failed = finished(bad, timeout=60)
    subprocess.run(["kill", "-s", "TERM", "--", f"-{bad_pid}"], check=False)
    assert failed["status"] == "Failed" and "scheduler id 'abc' is not one" in failed["result"], failed
    for _ in range(2):  # two more polls: the good job is still followed as running, not read as vanished
        _next_poll(here)
    assert get_info(good)["status"] == "Running" and _alive(get_info(good)["scheduler"]["id"])
    cancel(good)
    assert finished(good, timeout=60)["status"] == "Cancelled"


def test_grid_engines_accounting_is_read_for_a_few_vanished_jobs_a_poll_and_remembered(here) -> None:
    """qacct reads the whole accounting file (up to 20 s): at most ``MOST_REASONS_PER_POLL`` per poll, the others
    wait for the next (None); an answer is not asked again at once."""
    spec = moi.jobs.connections.context_spec("here").scheduler
    follow = Follow(Hand(here, spec, GridEngine(), LocalRunner()))
    vanished = [{"id": f"job{n}", "scheduler": {"id": str(900_000 + n)}} for n in range(MOST_REASONS_PER_POLL + 1)]
    answers = [follow._ended_reason(info) for info in vanished]
    assert answers == [""] * MOST_REASONS_PER_POLL + [None]
    assert follow._ended_reason(vanished[0]) == ""  # remembered: no look-up left this poll, yet answered
