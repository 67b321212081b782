"""How long a service job is kept, and what goes with each change of its state.

A service job (``moi.services``) carries its retention in its info object:
``"retention": {"archive_after": s, "expire_after": s, "keep_expired": s}`` (seconds,
or null for never) and ``"ttl"``, how long Redis keeps the document after each write
(longer than the blanket ttl when its retention is). Each change of its state
carries, in the same atomic write, its place in the due indexes the sweeper reads
(``moi:due:archive``, ``moi:due:expire``: sorted sets by due time, so a pass reads
only what is due) and, when it finishes, the mails it owes (``moi:mail``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from moi.core import policy
from moi.core.errors import ServiceDefinitionError
from moi.core.info import Info, Status, is_finished
from moi.core.keys import Keys

NEVER = "never"
KEPT_FOR_NEVER = 10 * 365 * 86400  # "never" in Redis terms: ten years

Command = list[str | int]


def parse_duration(text: str | int | float | None, what: str = "a duration") -> float | None:
    """Seconds in ``"90d"``, ``"12h"``, ``"30s"``, ``"15m"``, ``"2w"`` or a number; None for ``"never"``.

    The syntax and units of a job's time limit (``moi.core.policy``), but 0 is allowed and a retention
    may be longer than a year; ServiceDefinitionError otherwise."""
    if text is None or (isinstance(text, str) and text.strip().lower() == NEVER):
        return None
    if isinstance(text, int | float) and not isinstance(text, bool) and math.isfinite(text) and text >= 0:
        return float(text)
    seconds = policy.text_seconds(text) if isinstance(text, str) else None  # the policy's own syntax
    if seconds is None:
        raise ServiceDefinitionError(
            f"{what} is {text!r}: write a number with a unit (30s, 15m, 12h, 90d, 2w) or 'never'"
        )
    return seconds


def shown_duration(seconds: float | None) -> str:
    """The inverse of ``parse_duration``, in the largest unit that divides it (as ``moi.core.policy.shown``)."""
    return NEVER if seconds is None else policy.shown(seconds)


def retention_fields(archive_after: float | None, expire_after: float | None, keep_expired: float, ttl: int) -> Info:
    """The info fields of a new service job: its retention, and how long Redis keeps its document."""
    if archive_after is None or expire_after is None:
        kept = KEPT_FOR_NEVER
    else:
        kept = int(archive_after + expire_after + keep_expired) + ttl  # the blanket ttl: a margin for its run
    return {
        "retention": {"archive_after": archive_after, "expire_after": expire_after, "keep_expired": keep_expired},
        "ttl": max(kept, ttl),
    }


def state_commands(keys: Keys, node_id: str, new: Info, old: Info | None) -> list[Command]:
    """What goes with a write of a service job's info: its due indexes and, as it finishes, its mails.

    Index commands are idempotent (ZADD NX keeps the first due time), so a repeated
    write of the same state changes nothing; mails go only with the write that finishes it.
    """
    retention = new.get("retention")
    if not isinstance(retention, dict) or new.get("type") != "job":
        return []
    status, moment = new.get("status"), time.time()
    commands: list[Command] = []
    archive_after, expire_after = retention.get("archive_after"), retention.get("expire_after")
    if status == Status.SUCCESS and archive_after is not None:
        commands.append(["ZADD", keys.due("archive"), "NX", moment + archive_after, node_id])
    elif status in (Status.FAILED, Status.CANCELLED) and archive_after is not None and expire_after is not None:
        commands.append(["ZADD", keys.due("expire"), "NX", moment + archive_after + expire_after, node_id])
    elif status == Status.ARCHIVED:
        commands.append(["ZREM", keys.due("archive"), node_id])
        if expire_after is not None:
            commands.append(["ZADD", keys.due("expire"), "NX", moment + expire_after, node_id])
    elif status == Status.EXPIRED:
        commands.append(["ZREM", keys.due("expire"), node_id])
    if old is not None and is_finished(new) and not is_finished(old):
        commands += mail_commands(keys, node_id, new)
    return commands


def mail_commands(keys: Keys, node_id: str, new: Info) -> list[Command]:
    """The mails a service job owes as it finishes: its submitter's, and the admin's for a failure. An
    anonymous job owes none: anyone can make one fail, and its link was mailed when it was submitted."""
    if new.get("anonymous"):
        return []
    owed = []
    if new.get("email"):
        owed.append({"job": node_id, "to": "user"})
    if new.get("status") == Status.FAILED:
        owed.append({"job": node_id, "to": "admin"})
    return [["RPUSH", keys.mail, json.dumps(mail)] for mail in owed]


def ttl_of(info: Info, default: int) -> int:
    """How long Redis keeps this document after a write: its own ``ttl`` (a service job's) or the default."""
    own: Any = info.get("ttl")
    if isinstance(own, int) and not isinstance(own, bool) and own > 0:
        return own
    return default
