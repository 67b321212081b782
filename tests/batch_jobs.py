"""Job functions for the batch tests (importable by engines by reference)."""

from __future__ import annotations

from typing import Any


def divide(a: float, b: float, **kwargs: Any) -> float:
    return a / b


def progress(steps: int, **kwargs: Any) -> int:
    for step in range(steps):
        kwargs["status_update"](f"step {step + 1} of {steps}")
    return steps
