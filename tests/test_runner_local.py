"""LocalRunner: a scheduler's commands and job directories on this machine (a context with no host)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from moi.compute.schedulers.runner import Entry, LocalRunner
from moi.core.errors import SchedulerUnavailable

runner = LocalRunner()


def test_a_command_runs_with_its_output_code_and_stdin() -> None:
    ran = runner.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); sys.exit('no good')"], "fed")
    assert (ran.returncode, ran.stdout, ran.stderr, ran.ok) == (1, "FED\n", "no good\n", False)
    assert ran.problem() == "no good"
    assert runner.run(["printf", "%s|", "$HOME;`id`"]).stdout == "$HOME;`id`|"  # no shell in between


def test_a_missing_program_or_one_too_slow_is_one_line() -> None:
    with pytest.raises(SchedulerUnavailable, match="^moi-no-such-scheduler is not installed on this machine$"):
        runner.run(["moi-no-such-scheduler"])
    with pytest.raises(SchedulerUnavailable, match="^sleep did not answer within 0.2s on this machine$"):
        runner.run(["sleep", "5"], timeout=0.2)


def test_files_round_trip(tmp_path: Path) -> None:
    job = tmp_path / "job"
    runner.make_dirs(str(job / "outputs" / "deep"))
    runner.write_file(str(job / "job.sh"), b"#!/bin/sh\necho ran\n", mode=0o755)
    runner.write_file(str(job / "outputs" / "result.txt"), b"0123456789", mode=0o600)
    runner.write_file(str(job / "outputs" / "result.txt"), b"0123456789", mode=0o644)  # replaced, its mode too
    assert runner.read_file(str(job / "outputs" / "result.txt"), offset=3, length=4) == b"3456"
    assert runner.read_file(str(job / "outputs" / "result.txt"), offset=8) == b"89"
    assert [(entry.path, entry.size) for entry in runner.list_files(str(job))] == [
        ("job.sh", 19),
        ("outputs/result.txt", 10),
    ]
    assert runner.run([str(job / "job.sh")]).stdout == "ran\n"
    assert (job / "outputs" / "result.txt").stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileNotFoundError):
        runner.read_file(str(job / "absent"))
    assert runner.list_files(str(tmp_path / "gone")) == []


def test_links_are_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "own.txt").write_text("mine")
    (tmp_path / "etc").symlink_to("/etc")
    (tmp_path / "name").symlink_to(tmp_path / "own.txt")
    listed = runner.list_files(str(tmp_path))
    assert listed == [Entry("own.txt", 4, listed[0].mtime)]
    with pytest.raises(OSError):
        runner.write_file(str(tmp_path / "name"), b"not through a link")
    assert (tmp_path / "own.txt").read_text() == "mine"
    monkeypatch.chdir(tmp_path)
    runner.write_file("bare.txt", b"here")  # a bare name: in the current directory
    assert os.path.exists(tmp_path / "bare.txt")
