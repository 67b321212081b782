"""Job functions for the job-files tests (engines import them by reference)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def use_files(workdir: str) -> dict[str, Any]:
    """Read the inputs, write outputs (one in a subdirectory), report where it ran and what it saw."""
    inputs = Path(os.environ["INPUT"])
    seen = {path.name: path.read_bytes().decode() for path in sorted(inputs.iterdir())}
    output = Path(os.environ["OUTPUT"])
    (output / "joined.txt").write_text("".join(seen.values()))
    (output / "deeper").mkdir()
    (output / "deeper" / "count.txt").write_text(str(len(seen)))
    return {
        "workdir": workdir,
        "cwd": os.getcwd(),
        "inputs": seen,
        "input": os.environ["INPUT"],
        "output": os.environ["OUTPUT"],
        "temp": os.environ["TEMP"],
        "cpu": os.environ["CPU"],
    }


def where(**kwargs: Any) -> str:
    return os.getcwd()


def read_inputs_and_resource(**kwargs: Any) -> dict[str, str]:
    """The text of every input, and of every resource, by name."""
    seen = {path.name: path.read_text() for path in sorted(Path(os.environ["INPUT"]).iterdir())}
    if "RESOURCE" in os.environ:
        seen.update({f"resource/{p.name}": p.read_text() for p in sorted(Path(os.environ["RESOURCE"]).iterdir())})
    (Path(os.environ["OUTPUT"]) / "result.txt").write_text("done")
    return seen


def deep_tree(levels: int, **kwargs: Any) -> int:
    """Makes ``levels`` nested directories in $OUTPUT and a file at the bottom; made by descriptors, one
    level at a time, as a job that means harm would (no path names the bottom: it would be too long)."""
    fd = os.open(os.environ["OUTPUT"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as handle:
            handle.write("deep")
    finally:
        os.close(fd)
    return levels
