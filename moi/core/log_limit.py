"""Log lines an anonymous client can cause (a refused or failed login), at most so many a minute.

A flood of failed logins must not flood the log (nor its disk): past ``per_minute`` lines in
a minute the rest are counted, not written, and the next line written says how many were left out.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class LimitedLog:
    def __init__(self, logger: logging.Logger, per_minute: int = 60) -> None:
        self.logger, self.per_minute = logger, per_minute
        self._minute = 0
        self._written = self._skipped = 0

    def log(self, level: int, message: str, *args: Any) -> None:
        minute = int(time.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._written = minute, 0
        if self._written >= self.per_minute:
            self._skipped += 1
            return
        if self._skipped:
            self.logger.log(
                level, "%d login log line(s) left out (more than %d a minute)", self._skipped, self.per_minute
            )
        self._written += 1
        self.logger.log(level, message, *args)

    def info(self, message: str, *args: Any) -> None:
        self.log(logging.INFO, message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self.log(logging.WARNING, message, *args)
