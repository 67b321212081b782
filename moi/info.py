"""The info object: the JSON document kept in Redis for every job and group."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

Info = dict[str, Any]


class Stored(dict[str, Any]):
    """An info object as read from Redis, with the exact JSON text it was read from.

    A relay sends that text on as it is rather than encoding the object again.
    Read-only by convention: a changed copy must be a plain dict (``dict(stored)``).
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        super().__init__(json.loads(text))
        self.text = text


class Status(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED})

# The seed's fields, in the order the seed's CLI prints them (result last).
SEED_FIELDS = (
    "context",
    "date_created",
    "date_end",
    "date_start",
    "id",
    "name",
    "parent",
    "pubsub",
    "status",
    "type",
    "url",
    "result",
)


def now() -> str:
    """Timestamps as the seed prints them: ``2015-06-01 15:46:49.977480``."""
    return datetime.now().isoformat(sep=" ", timespec="microseconds")


def new_id() -> str:
    return str(uuid.uuid4())


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def new_info(
    node_id: str,
    name: str,
    kind: str,
    pubsub: str,
    *,
    parent: str | None = None,
    url: str | None = None,
    context: str | None = None,
) -> Info:
    is_job = kind == "job"
    return {
        "id": node_id,
        "name": name,
        "type": kind,
        "pubsub": pubsub,
        "url": url,
        "parent": parent,
        "status": Status.QUEUED if is_job else None,
        "result": None,
        "date_start": None,
        "date_end": None,
        "context": context,
        "date_created": now(),
        "revision": 0,
    }


def is_finished(info: Info) -> bool:
    return info.get("status") in TERMINAL


def encode_result(value: Any) -> tuple[Any, str]:
    """A result as stored, and its format: ``json`` as it is, or ``repr`` text.

    A value JSON cannot hold exactly (an object, NaN, a set) is stored as its
    repr, marked as such, so the job still finishes.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return _safe_repr(value), "repr"
    return value, "json"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as error:  # a broken __repr__ must not strand the job
        return f"<unrepresentable {type(value).__name__}: {error!r}>"


def dumps(info: Info) -> str:
    return json.dumps(info, separators=(",", ":"))
