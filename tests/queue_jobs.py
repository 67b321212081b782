"""Job functions for the queue tests (engines import them by reference)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def hold(release: str, **kwargs: Any) -> str:
    """Keep an engine busy until ``release`` exists."""
    while not Path(release).exists():
        time.sleep(0.05)
    return "released"


def record(log: str, label: str, **kwargs: Any) -> str:
    """Append ``label`` to ``log``: a side effect the test reads to see order and count runs."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{label}\n".encode())
    finally:
        os.close(fd)
    return label


def a_set(**kwargs: Any) -> set[int]:
    return {1, 2, 3}


class Refused(Exception):
    pass


def refuse(**kwargs: Any) -> None:
    raise Refused("not today")


def hold_or_record(path: str, label: str | None = None, **kwargs: Any) -> str:
    """A batch of mixed items: ``(release,)`` holds an engine, ``(log, label)`` records and returns."""
    return hold(path) if label is None else record(path, label)


def divide(a: float, b: float) -> float:
    return a / b
