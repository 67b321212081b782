"""The one-host Grid Engine cell of tests/gridengine.py, used as moi's Grid Engine adapter will use it.

Jobs are submitted with ``qsub -terse`` (a name, output paths, a walltime, slots of the PE
``smp``), watched in ``qstat -xml`` and ``qstat -j``, deleted with ``qdel``, and their ends read
from ``qacct -j``: a success, an exit status of 3, a ``qdel`` and a walltime kill. With
``MOI_RECORD_GRIDENGINE=1`` the outputs are saved under tests/data/gridengine/, where the
adapter's unit tests read them. Where Grid Engine cannot run (not root, no package), the module
is skipped with one line; in CI (``CI=true``, as root) it runs.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.conftest import until
from tests.gridengine import GridEngine

pytestmark = pytest.mark.slow  # a cell started, jobs waited for, one killed at its walltime

WAIT = 120.0  # seconds for what Grid Engine does; nothing here is timed
RECORDED = Path(__file__).parent / "data" / "gridengine"


def record(name: str, text: str) -> None:
    """Keep a real output for the adapter's unit tests, when asked to (MOI_RECORD_GRIDENGINE=1)."""
    if os.environ.get("MOI_RECORD_GRIDENGINE") == "1":
        RECORDED.mkdir(parents=True, exist_ok=True)
        (RECORDED / name).write_text(text)


def submit(cell: GridEngine, name: str, body: str, *options: str, recorded_as: str = "") -> str:
    """The id ``qsub -terse`` prints for a ``/bin/sh`` job running ``body`` in the cell's directory."""
    script = cell.directory / f"{name}.sh"
    script.write_text(f"#!/bin/sh\ncd {cell.directory}\n{body}\n")
    output = cell.run(
        "qsub", "-terse", "-N", name, "-o", str(cell.directory / f"{name}.out"), "-e",
        str(cell.directory / f"{name}.err"), *options, str(script),
    )  # fmt: skip
    if recorded_as:
        record(recorded_as, output)
    return output.strip()


def states(cell: GridEngine) -> dict[str, str]:
    """Each job's id and state letters (``qw``, ``r``, ``dr`` ...) as ``qstat -xml`` shows them."""
    tree = ElementTree.fromstring(cell.run("qstat", "-u", "*", "-xml"))
    return {job.findtext("JB_job_number", ""): job.findtext("state", "") for job in tree.iter("job_list")}


def accounting(cell: GridEngine, job_id: str, name: str) -> dict[str, str]:
    """``qacct -j``'s fields of an ended job, once qmaster has written its record; kept as ``name``."""

    def written() -> str | None:
        done = subprocess.run(["qacct", "-j", job_id], env=cell.env(), capture_output=True, text=True, timeout=60)
        return done.stdout if done.returncode == 0 else None

    text: str = until(written, f"qacct's record of job {job_id}", WAIT)
    record(name, text)
    fields = (line.split(maxsplit=1) for line in text.splitlines())
    return {field[0]: field[1].strip() for field in fields if len(field) == 2}


def test_a_job_pends_runs_and_its_exit_status_is_accounted(gridengine: GridEngine) -> None:
    """Two slots of four taken; a job asking for four pends with a reason, runs when they are free."""
    directory = gridengine.directory
    held = submit(gridengine, "moi-exit3", "until [ -e exit3.go ]; do sleep 0.2; done; echo out; echo err >&2; exit 3",
                  "-l", "h_rt=0:2:0", "-pe", "smp", "2", recorded_as="qsub-terse.txt")  # fmt: skip
    until(lambda: states(gridengine).get(held) == "r", "the first job running", WAIT)
    waiting = submit(gridengine, "moi-ok", "until [ -e ok.go ]; do sleep 0.2; done; echo fine",
                     "-l", "h_rt=120", "-pe", "smp", "4")  # fmt: skip
    reason = until(lambda: "cannot run" in (text := gridengine.run("qstat", "-j", waiting)) and text, "a reason", WAIT)
    assert states(gridengine) == {held: "r", waiting: "qw"}
    record("qstat-pending-and-running.xml", gridengine.run("qstat", "-u", "*", "-xml"))
    record("qstat-j-pending.txt", reason)
    record("qstat-j-running.txt", gridengine.run("qstat", "-j", held))
    assert "hard resource_list:         h_rt=120" in reason and "parallel environment:  smp range: 4" in reason

    (directory / "exit3.go").touch()
    until(lambda: states(gridengine) == {waiting: "r"}, "the second job running once the first ended", WAIT)
    record("qstat-running.xml", gridengine.run("qstat", "-u", "*", "-xml"))
    failed = accounting(gridengine, held, "qacct-exit3.txt")
    assert (failed["exit_status"], failed["failed"].split()[0], failed["slots"]) == ("3", "0", "2")
    assert (directory / "moi-exit3.out").read_text() == "out\n" and (directory / "moi-exit3.err").read_text() == "err\n"

    (directory / "ok.go").touch()
    done = accounting(gridengine, waiting, "qacct-success.txt")
    assert (done["exit_status"], done["failed"].split()[0], done["jobname"]) == ("0", "0", "moi-ok")
    gone = subprocess.run(["qstat", "-j", waiting], env=gridengine.env(), capture_output=True, text=True)
    record("qstat-j-ended.txt", f"returncode {gone.returncode}\nstdout:\n{gone.stdout}stderr:\n{gone.stderr}")
    assert gone.returncode != 0


def test_qdel_ends_a_running_job(gridengine: GridEngine) -> None:
    job_id = submit(gridengine, "moi-qdel", "echo started; sleep 300", "-l", "h_rt=600")
    until(lambda: states(gridengine).get(job_id) == "r", "the job running", WAIT)
    record("qdel.txt", gridengine.run("qdel", job_id))
    until(lambda: job_id not in states(gridengine), "the job gone from qstat", WAIT)
    ended = accounting(gridengine, job_id, "qacct-qdel.txt")
    assert ended["failed"].split()[0] != "0" or ended["exit_status"] != "0"


def test_a_job_past_its_walltime_is_killed(gridengine: GridEngine) -> None:
    job_id = submit(gridengine, "moi-walltime", "echo started; sleep 300", "-l", "h_rt=0:0:3")
    until(lambda: job_id not in states(gridengine), "the job killed at its walltime", WAIT)
    ended = accounting(gridengine, job_id, "qacct-walltime.txt")
    assert ended["failed"].split()[0] != "0" or ended["exit_status"] != "0"


def outcome(cell: GridEngine, *argv: str) -> str:
    """A command's return code, output and errors, as the adapter meets them when a command refuses."""
    done = subprocess.run(argv, env=cell.env(), capture_output=True, text=True, timeout=60)
    return f"returncode {done.returncode}\nstdout:\n{done.stdout}stderr:\n{done.stderr}"


def test_refusals_holds_and_a_job_in_error_state(gridengine: GridEngine) -> None:
    """What qsub says when it refuses, and how a held job and one that cannot start (``Eqw``) look."""
    refused = outcome(gridengine, "qsub", "-terse", "-pe", "nope", "2", "-b", "y", "true")
    record("qsub-refused-pe.txt", refused)
    assert refused.startswith("returncode 1") and 'parallel environment "nope" does not exist' in refused
    record(
        "qsub-refused-never-runs.txt",
        outcome(gridengine, "qsub", "-terse", "-w", "e", "-pe", "smp", "99", "-b", "y", "true"),
    )
    record("qacct-unknown.txt", outcome(gridengine, "qacct", "-j", "999999"))
    record("qdel-unknown.txt", outcome(gridengine, "qdel", "999999"))
    held = submit(gridengine, "moi-held", "true", "-h")
    broken = submit(gridengine, "moi-broken", "true", "-o", "/nonexistent/moi-broken.out")
    until(lambda: states(gridengine).get(broken) == "Eqw", "the job that cannot open its output in error state", WAIT)
    assert states(gridengine)[held] == "hqw"
    record("qstat-held-and-error.xml", gridengine.run("qstat", "-u", "*", "-xml"))
    record("qstat-j-held.txt", gridengine.run("qstat", "-j", held))
    record("qstat-j-error.txt", gridengine.run("qstat", "-j", broken))
    assert "error reason" in gridengine.run("qstat", "-j", broken)
    gridengine.run("qdel", held, broken)
    until(lambda: not {held, broken} & set(states(gridengine)), "the held and the broken job deleted", WAIT)
    ended = accounting(gridengine, broken, "qacct-error.txt")
    assert (ended["failed"], ended["exit_status"]) == ("26  : opening input/output file", "0")
