"""The moi command's exit status: 0 done, 1 moi could not do it, 2 a usage mistake, 3 a waited-for job failed.

And inputs that once gave a traceback: a binary --each file, code nested past the parser's limits.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from moi.job import cancel
from tests.conftest import finished, nothing_stored, run_moi


def test_block_on_a_successful_job_exits_0(r) -> None:
    done = run_moi("submit", "--cmd", "return 1", "--block")
    assert done.returncode == 0, done.stderr
    assert "status\t\t: Success" in done.stdout


def test_block_on_a_failed_job_exits_3_after_printing_it(r) -> None:
    done = run_moi("submit", "--cmd", "raise ValueError('no')", "--block")
    assert done.returncode == 3, done.stderr
    assert "status\t\t: Failed" in done.stdout
    assert "ValueError: no" in done.stdout
    assert done.stderr == ""


def test_no_block_on_a_failing_job_exits_0(r) -> None:
    done = run_moi("submit", "--cmd", "raise ValueError('no')")
    assert done.returncode == 0, done.stderr


def test_block_on_a_cancelled_job_exits_3(r) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "moi", "submit", "--cmd", "import time; time.sleep(300)", "--block"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed before it starts waiting
        job_id = first.removeprefix("Submitted job id: ").strip()
        cancel(job_id)
        proc.wait(60)
        # Read through the same buffered files: communicate() would skip what readline() buffered already.
        stdout, stderr = proc.stdout.read(), proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr
    assert "status\t\t: Cancelled" in stdout, (stdout, stderr)


@pytest.mark.parametrize(("lines", "status"), [("echo one\necho two\n", 0), ("echo one\nexit 3\necho three\n", 3)])
def test_each_block_exits_3_when_any_item_failed(r, tmp_path, lines: str, status: int) -> None:
    commands = tmp_path / "commands.txt"
    commands.write_text(lines)
    done = run_moi("submit", "--each", str(commands), "--block")
    assert done.returncode == status, done.stderr
    assert done.stdout.count("**********") == 2 * lines.count("\n")  # every item printed first


@pytest.mark.parametrize(
    "args",
    [
        ["submit"],
        ["submit", "--cmd-type", "perl", "--cmd", "1"],
        ["job"],
        ["userjobs"],
        ["no-such-command"],
    ],
)
def test_a_usage_mistake_exits_2(r, args: list[str]) -> None:
    done = run_moi(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["job", "--job-id", "not-an-id"],
        ["job", "--job-id", "0c1ce595-4f6d-4fcb-b872-90118f6b1cd9"],
        ["userjobs", "--key", "nobody"],
        ["submit", "--cmd", "return ("],
    ],
)
def test_what_moi_cannot_do_exits_1(r, args: list[str]) -> None:
    done = run_moi(*args)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", b"echo fine\n\x00\x00\x00\n", b"\xc3\x28 invalid utf-8\n"],
)
def test_each_on_a_binary_file_is_one_line(r, tmp_path, content: bytes) -> None:
    binary = tmp_path / "picture.png"
    binary.write_bytes(content)

    done = run_moi("submit", "--each", str(binary))

    assert (done.returncode, done.stdout) == (2, "")
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert f"{binary} is not a text file of commands" in done.stderr
    assert nothing_stored(r)  # nothing submitted


def test_code_nested_past_the_parsers_limit_is_one_line(r) -> None:
    done = run_moi("submit", "--cmd", "return " + "-" * 10_000 + "1")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "Python code does not compile: it is nested too deeply for the parser\n"
    assert nothing_stored(r)


def test_a_time_limit_holds_with_its_submitter_gone(r) -> None:
    """`moi submit` exits at once; the engine alone ends the job at its limit, and says so in one line."""
    done = run_moi("submit", "--cmd", "import time; time.sleep(3600)", "--time-limit", "3s")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("Submitted job id: ")[1].split()[0]
    info = finished(job_id)
    assert (info["status"], info["result"]) == ("Failed", "Time limit of 3s exceeded"), info
