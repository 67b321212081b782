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
