"""Job functions the tests send to engines (importable there by reference)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any


def add(a: int, b: int, **kwargs: Any) -> int:
    return a + b


def chatty(steps: int, **kwargs: Any) -> str:
    for step in range(steps):
        kwargs["status_update"](f"step {step + 1} of {steps}")
    return "done"


def fail(**kwargs: Any) -> None:
    raise ValueError("could not convert string to float: 'crash and burn'")


def not_json(**kwargs: Any) -> Any:
    return {"when": object()}


def nan(**kwargs: Any) -> float:
    return float("nan")


def sleepy(seconds: float, **kwargs: Any) -> float:
    time.sleep(seconds)
    return seconds


def late_status(**kwargs: Any) -> str:
    kwargs["status_update"]("almost")
    return "finished"


def write_host(seconds: float, workdir: str, **kwargs: Any) -> str:
    """A job's output written where it runs: ``output/host.txt`` holds the host's name."""
    time.sleep(seconds)  # long enough that the next job goes to the other engine
    with open(os.path.join(workdir, "output", "host.txt"), "w") as out:
        out.write(socket.gethostname())
    return socket.gethostname()
