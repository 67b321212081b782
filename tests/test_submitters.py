"""Scripts as users write them: they submit and exit at once, run from their own directory, run moi in the
background and stop it with a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from moi.core.info import Info, Status, is_finished
from moi.storage.redis_server import free_port
from moi.storage.store import Store, store_for
from tests.conftest import ROOT, finished, until

RUNS = 20
LANES = 2

SUBMIT_AND_EXIT = """
from moi.job import submit
from tests.jobs import add

job_id, _, _ = submit("default", "quitter", "exits at once", None, add, 20, 22)
print(job_id)
"""


def script(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_script(path: Path, cwd: Path, more: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(more or {})}  # for tests.jobs, as an application has its own
    return subprocess.run([sys.executable, str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def lane(path: Path, cwd: Path, prefix: str, runs: int) -> list[str]:
    """``runs`` runs of the script, one after another, with the key prefix ``prefix``: the job ids."""
    job_ids = []
    for _ in range(runs):
        done = run_script(path, cwd, {"MOI_KEY_PREFIX": prefix})
        assert done.returncode == 0, done.stderr
        job_ids.append(done.stdout.strip())
    return job_ids


def ended(keyed: Store, job_id: str) -> Info:
    """The job's info once it has finished (its keys under ``keyed``'s prefix)."""
    return until(lambda: is_finished(info := keyed.get(job_id)) and info, f"job {job_id} finished", 60)


@pytest.mark.slow
def test_a_script_that_submits_and_exits_at_once_never_leaves_its_job_queued(r, store, tmp_path) -> None:
    path = script(tmp_path / "quitter.py", SUBMIT_AND_EXIT)
    # Two lanes at once (Python start-ups are most of a run's time), each with a key prefix of its own: no
    # process of one lane, nor this one, dispatches the other's jobs; in a lane, each script starts as the last ended.
    prefixes = [f"lane{n}:" for n in range(LANES)]
    with ThreadPoolExecutor(LANES) as pool:
        lanes = list(pool.map(lambda prefix: lane(path, tmp_path, prefix, RUNS // LANES), prefixes))
    stores = [store_for(store.url, prefix, store.ttl) for prefix in prefixes]
    infos = [ended(keyed, job_id) for keyed, ids in zip(stores, lanes, strict=True) for job_id in ids]
    assert [info["status"] for info in infos] == [Status.SUCCESS] * RUNS
    assert all(info["result"] == 42 for info in infos)


def test_a_function_from_a_module_beside_the_script_runs_in_the_scripts_directory(r, tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "analysis.py").write_text(
        "import os\n\ndef where(**kwargs):\n    import data_helper\n    return [os.getcwd(), data_helper.NAME]\n"
    )
    (project / "data_helper.py").write_text("NAME = 'beside the script'\n")
    path = script(
        project / "run.py",
        """
        import sys
        from moi.job import submit
        from analysis import where

        def local(**kwargs):  # the script's own function: shipped as code, run in the same directory
            import os
            return os.getcwd()

        print(submit("default", "scientist", "where", None, where)[0])
        print(submit("default", "scientist", "local", None, local)[0])
        """,
    )
    done = run_script(path, project)
    assert done.returncode == 0, done.stderr
    by_module, by_code = (finished(job_id) for job_id in done.stdout.split())
    assert by_module["status"] == Status.SUCCESS, by_module["result"]
    assert by_module["result"] == [str(project), "beside the script"]
    assert by_code["result"] == str(project)


def start_in_background(*args: str) -> subprocess.Popen[str]:
    """As a shell script's ``moi ... &`` would: SIGINT arrives ignored."""
    return subprocess.Popen(
        [sys.executable, "-m", "moi", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def stops_cleanly(proc: subprocess.Popen[str], ready: str, signum: signal.Signals) -> tuple[int, str]:
    try:
        assert proc.stdout is not None
        seen = []
        while not any(ready in line for line in seen):
            line = proc.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=60)
        return proc.returncode, "".join(seen) + rest
    finally:
        if proc.poll() is None:  # never leak it, whatever went wrong
            proc.kill()
            proc.wait(10)


def test_moi_watchdog_started_in_the_background_stops_on_sigint_and_sigterm(r) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        code, output = stops_cleanly(start_in_background("watchdog", "--interval", "0.5"), "watching jobs", signum)
        assert code == 0, output
        assert "watchdog stopped" in output and "Traceback" not in output


def test_moi_server_started_in_the_background_stops_on_sigint_and_sigterm(r) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        server = start_in_background("server", "--port", str(free_port()))
        code, output = stops_cleanly(server, "moi server:", signum)
        assert code == 0, output
        assert "Traceback" not in output


def test_a_job_submitted_from_a_deleted_directory_runs_where_the_engine_is(r, tmp_path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    path = script(tmp_path / "quitter.py", SUBMIT_AND_EXIT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The shell's directory is removed before python starts: getcwd() fails in the submitter.
    command = f"cd {gone} && rmdir {gone} && exec {sys.executable} {path}"
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info = finished(done.stdout.strip())
    assert is_finished(info) and info["status"] == Status.SUCCESS, info
