"""Services that could not be loaded: why, where and when, kept in Redis for ``moi status``, the
operations page and ``/metrics``.

A service's class is imported where its jobs run: on an engine, in the submitter's directory
(``moi.services.lifecycle``), and by every process that reads ``[moi] services``
(``moi.services.registry``). When that import fails, whoever failed writes a record into
``moi:services:unloadable``, keyed by the service's entry (``module:Class``, a script's
``path:Class``, or a YAML service's name): its name when known, the error as one line, where
(an engine, or a process reading the configuration) and when. A load that works clears it: an
engine's clears any record (engines are where the jobs and their hooks run); a process reading
the configuration clears only a record another such process wrote, so a command run where the
module happens to import never hides that the engines cannot import it. Nothing here raises for
Redis: a record is a note, never a reason for a job or a command to fail.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moi.core.errors import MoiError
from moi.core.redact import printable
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.services")

ENGINE = "engine"  # who wrote a record: an engine loading a job's service ...
CONFIGURATION = "configuration"  # ... or a process reading [moi] services


@dataclass(frozen=True)
class Unloadable:
    """One service that could not be loaded, as its record says."""

    entry: str
    service: str
    error: str
    where: str
    by: str
    at: float  # epoch seconds; 0.0 when the record holds no time that can be shown as one
    kept_at: str = ""  # the record's own ``at``, as written, when it is not such a time

    def line(self) -> str:
        """``service 'name' (entry) cannot be loaded on WHERE (last at TIME): ERROR``, for ``moi status``."""
        named = f"{self.service!r} ({self.entry})" if self.service and self.service != self.entry else self.entry
        when = _shown_time(self.at) if self.at else printable(self.kept_at, 40) or "?"
        where, error = printable(self.where, 200), printable(self.error, 300)
        return f"service {printable(named, 200)} cannot be loaded on {where} (last at {when}): {error}"

    def document(self) -> dict[str, Any]:
        """What the operations page's route answers for it."""
        return {
            "entry": self.entry,
            "service": self.service,
            "error": self.error,
            "where": self.where,
            "by": self.by,
            "at": self.at,
        }


def entry_of(carried: Any, name: str = "") -> str:
    """The entry a job's call names its service by (``moi.services.lifecycle.carried``): ``module:Class``,
    ``path:Class`` for a script, a YAML service's name; ``name`` for anything else."""
    if isinstance(carried, tuple) and len(carried) == 3 and all(isinstance(part, str) for part in carried):
        return f"{carried[1]}:{carried[2]}"
    if isinstance(carried, Mapping) and isinstance(carried.get("name"), str):
        return str(carried["name"])
    if isinstance(carried, type):
        return f"{carried.__module__}:{carried.__qualname__}"
    return name


def on_engine(label: str) -> str:
    """How a record names an engine."""
    return f"engine {label}"


def this_process() -> str:
    """How a record names a process reading the configuration."""
    return f"{socket.gethostname()}:{os.getpid()} (reading [moi] services)"


def record(store: Store, entry: str, service: str, error: str, where: str, by: str) -> None:
    """Note that ``entry`` could not be loaded ``where``, with ``error`` (one line); never raises."""
    document = {"service": service, "error": error, "where": where, "by": by, "at": time.time()}
    try:
        with reaching(store.url):
            store.redis.hset(store.keys.services_unloadable, entry, json.dumps(document))
    except MoiError as note_lost:
        log.warning("service %s cannot be loaded (%s); not noted: %s", entry, error, note_lost)


def clear(store: Store, entry: str, by: str) -> None:
    """``entry`` loaded: its record goes (a configuration's load clears only a configuration's record)."""
    key = store.keys.services_unloadable
    try:
        with reaching(store.url):
            if by == ENGINE:
                store.redis.hdel(key, entry)
                return
            kept = store.redis.hget(key, entry)
            if kept is not None and _parsed(entry, kept).by == CONFIGURATION:
                store.redis.hdel(key, entry)
    except MoiError as error:
        log.warning("service %s loads again; its record not cleared: %s", entry, error)


def read(store: Store) -> list[Unloadable]:
    """Every service noted as unloadable, by entry."""
    with reaching(store.url):
        return from_hash(store.redis.hgetall(store.keys.services_unloadable))


def from_hash(kept: Mapping[str, str]) -> list[Unloadable]:
    """The records of ``moi:services:unloadable`` as read (by ``read``, or in a pipeline), by entry."""
    return [_parsed(entry, text) for entry, text in sorted(kept.items())]


def _parsed(entry: str, text: str) -> Unloadable:
    """A record as written by ``record``; one that is not (written behind moi's back) says so."""
    try:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return Unloadable(entry, "", "its record in Redis is not moi's JSON", "?", "", 0.0)
    kept, at = found.get("at"), _time_of(found.get("at"))
    as_written = kept if isinstance(kept, str) else json.dumps(kept)
    return Unloadable(
        entry=entry,
        service=str(found.get("service") or ""),
        error=str(found.get("error") or ""),
        where=str(found.get("where") or "?"),
        by=str(found.get("by") or ""),
        at=at or 0.0,
        kept_at="" if at is not None or kept is None else as_written,
    )


def _time_of(at: Any) -> float | None:
    """A record's ``at`` as epoch seconds, when it is a number this host can show as a time; else None
    (written behind moi's back: a text, a number past what ``localtime`` takes, such as 1e300)."""
    if not isinstance(at, int | float) or isinstance(at, bool):
        return None
    try:
        seconds = float(at)  # an integer of hundreds of digits: OverflowError
        _shown_time(seconds)
    except (OverflowError, OSError, ValueError):
        return None
    return seconds


def _shown_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
