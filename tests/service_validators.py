"""A project's own validators, kept in one module (``validators.collect`` takes the public ones)."""

from __future__ import annotations


def short(data: bytes) -> bool:
    return len(data) < 100


def ascii_only(data: bytes) -> bool:
    return data.isascii()


def _helper(data: bytes) -> bool:  # skipped: its name starts with _
    return False
