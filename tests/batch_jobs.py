"""Job functions for the batch tests (importable by engines by reference)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def divide(a: float, b: float, **kwargs: Any) -> float:
    return a / b


def progress(steps: int, **kwargs: Any) -> int:
    for step in range(steps):
        kwargs["status_update"](f"step {step + 1} of {steps}")
    return steps


def announce_and_wait(release: str, **kwargs: Any) -> str:
    """Say so in the status text, then wait until ``release`` exists."""
    kwargs["status_update"]("waiting for the release file")
    while not Path(release).exists():
        time.sleep(0.05)
    return "released"
