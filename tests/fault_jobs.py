"""Job functions for the fault tests (engines import them by reference)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def sleep_then_touch(seconds: float, path: str, **kwargs: Any) -> float:
    """Sleeps, then leaves a mark the test can see without Redis."""
    time.sleep(seconds)
    Path(path).touch()
    return seconds


def engine_pid(**kwargs: Any) -> int:
    import os

    return os.getpid()
