"""The example script, and the embedded runtime a user gets with no configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_moi


def test_example_script_prints_three_finished_jobs(r) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "submit_jobs.py")], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    decoder, text, infos = json.JSONDecoder(), done.stdout.strip(), []
    while text:
        info, end = decoder.raw_decode(text)
        infos.append(info)
        text = text[end:].strip()
    assert [(info["name"], info["status"]) for info in infos] == [
        ("The hello job", "Success"),
        ("The failing job", "Failed"),
        ("A shell command", "Success"),
    ]
    assert infos[0]["result"] == "hi moi!"
    assert "crash and burn" in infos[1]["result"]
    assert infos[2]["result"] == ["Linux\ndone\n", "", 0]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_embedded_runtime_starts_once_reports_and_stops(tmp_path) -> None:
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items() if key not in ("MOI_REDIS_URL", "MOI_CONTEXTS")}
    env.update(MOI_STATE_DIR=str(state), MOI_ENGINES="1")
    command = [sys.executable, "-m", "moi", "submit", "--cmd", "return 6 * 7", "--block"]
    # Two commands at the same moment, on a machine where nothing runs yet.
    both = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    try:
        outputs = [proc.communicate(timeout=240) for proc in both]
        assert [proc.returncode for proc in both] == [0, 0], outputs
        assert all(out.splitlines()[-1] == "result\t\t: 42" for out, _ in outputs)
        supervisors = processes_mentioning(f"moi.upkeep.supervisor {state}")
        assert len(supervisors) == 1

        status = run_moi("status", env=env)
        assert "local runtime: running" in status.stdout
        assert "redis: redis://:***@127.0.0.1:" in status.stdout and "1 engines" in status.stdout
    finally:
        down = run_moi("down", env=env)
    assert down.stdout.strip() == "local runtime stopped"
    assert processes_mentioning(str(state)) == []
    assert "not running" in run_moi("status", env=env).stdout
    assert run_moi("down", env=env).stdout.strip() == "local runtime was not running"


def test_the_service_examples_run_as_the_readme_says(r, tmp_path: Path) -> None:
    script = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hetatm_service.py")], capture_output=True, text=True, timeout=180
    )
    assert script.returncode == 0, script.stderr
    assert "Success: {'exit_code': 0}" in script.stdout
    assert 'residues: {"HOH": 1, "ZN": 1}' in script.stdout

    text = tmp_path / "text.txt"
    text.write_text("a few words of some length here\n")
    loaded = run_moi("services", "load", str(ROOT / "examples" / "services.yaml"))
    assert loaded.returncode == 0, loaded.stderr
    ran = run_moi("run", "wordcount", "--param", "min_length=4", "--input", str(text), "--block")
    assert ran.returncode == 0, ran.stderr
    job_id = ran.stdout.split("Submitted job id: ")[1].split()[0]
    count = run_moi("download", "--job-id", job_id, "output/count.txt")
    assert count.stdout.strip() == "4"  # words, some, length, here
