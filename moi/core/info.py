"""The info object: the JSON document kept in Redis for every job and group."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from moi.core.errors import BadDocument
from moi.core.redact import printable

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

    @classmethod
    def checked(cls, key: str, text: str, node_id: str | None = None) -> Stored:
        """A document read from ``key``, checked as ``parse`` checks it (BadDocument otherwise); decoded once."""
        stored = cls.__new__(cls)
        stored.update(parse(key, text, node_id))
        stored.text = text
        return stored


class Status(StrEnum):
    QUEUED = "Queued"
    PAUSED = "Paused"  # queued, and held back until resumed
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    # A service job's lifecycle (moi.services): around Running, and after Success.
    PREPROCESSING = "Preprocessing"
    POSTPROCESSING = "Postprocessing"
    ARCHIVED = "Archived"  # its results are no longer served; its metadata is kept
    EXPIRED = "Expired"  # its directory is gone; only its info object is kept


TERMINAL = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED, Status.ARCHIVED, Status.EXPIRED})

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
    # "revision" first: the compare-and-set scripts read it there without decoding the document.
    if "revision" in info:
        info = {"revision": info["revision"], **info}
    return json.dumps(info, separators=(",", ":"))


# validating what Redis holds ----------------------------------------------------


def parse(key: str, raw: str | bytes, node_id: str | None = None) -> Info:
    """The info object stored at ``key``, or BadDocument saying what is wrong with it.

    Anything can be written into Redis behind moi's back; this is the one place
    that decides whether a document read back is an info object moi can use.
    ``node_id``, when given, is the id the document must carry.
    """
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise BadDocument(key, "it is not JSON") from None
    return checked(key, value, node_id)


def checked(key: str, value: Any, node_id: str | None = None) -> Info:
    """``value`` (decoded JSON) as an info object, or BadDocument; see ``parse``."""
    problem = info_problem(value, node_id)
    if problem is not None:
        raise BadDocument(key, problem)
    info: Info = value
    return info


def info_problem(value: Any, node_id: str | None = None) -> str | None:
    """Why ``value`` is not an info object moi can use, or None when it is.

    Only what moi's own code relies on is checked: the id it is filed under,
    the kind of node, the fields it compares, sorts or counts on.
    """
    if not isinstance(value, dict):
        return f"it is JSON but not an object (a {_json_kind(value)})"
    if "id" not in value:
        return "it has no id"
    if not isinstance(value["id"], str) or (node_id is not None and value["id"] != node_id):
        return f"its id is {_shown(value['id'])}, not the id it is stored under"
    if value.get("type") not in ("job", "group"):
        return f"its type is {_shown(value.get('type'))}, not 'job' or 'group'"
    return _field_problem(value)


# field -> (the types it may hold, what to call them in a message)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "revision": ((int,), "a number"),
    "date_created": ((str,), "a string"),
    "status": ((str, type(None)), "a string"),  # a group's is null
}


def _field_problem(value: Info) -> str | None:
    for field, (types, wanted) in _FIELD_TYPES.items():
        if field not in value:
            return f"it has no {field}"
        held = value[field]
        if not isinstance(held, types) or isinstance(held, bool):  # JSON true is not a revision
            return f"its {field} is {_shown(held)}, not {wanted}"
    return None


def _json_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    return printable(json.dumps(value) if not isinstance(value, str) else repr(value), 60)


def has_children(info: Info) -> bool:
    """Whether a node can have children: a group, or a service job with steps (they are its children)."""
    return info.get("type") == "group" or bool(info.get("steps"))
