"""The ``moi`` command: one module per command family, gathered by ``main``."""

from moi.cli.main import main
from moi.cli.output import format_info, wait_for

__all__ = ["format_info", "main", "wait_for"]
