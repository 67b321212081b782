"""A job's resources on a batch scheduler: checked where they enter, carried in its info object.

A job asks for any of ``RESOURCE_NAMES``; its info's ``resources`` field holds what it asked, checked and in one
unit each, so that every scheduler's adapter renders the same values into its own directives:

- ``cores`` (per task, a whole number from 1), ``nodes`` (from 1), ``gpus`` (from 0);
- ``memory`` in MiB: given as ``512M``, ``128G``, ``1T`` or a number of MiB;
- ``walltime`` in seconds: given as ``90s``, ``15m``, ``12h``, ``2d``, ``HH:MM:SS``, ``D-HH:MM:SS`` or seconds;
- ``partition`` (a queue) and ``account`` (the project charged): names of letters, digits, ``_ . -``.

Every value ends in a script's directive line, so nothing else passes: no space, no newline, no quote.
``submit(..., resources=...)`` also takes shared files by URI (``moi.jobfiles``): any other name is one of those.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from moi.core.errors import InvalidValue
from moi.core.policy import text_seconds
from moi.core.redact import printable
from moi.core.values import is_whole

RESOURCE_NAMES = ("cores", "memory", "walltime", "nodes", "gpus", "partition", "account")
Resources = dict[str, int | str]

MOST_COUNT = 1_000_000  # cores, nodes or gpus beyond this are a mistake (and a number Lua holds exactly)
MOST_MEMORY_MIB = 1024**3  # a PiB
MOST_WALLTIME = 366 * 86400
_MEMORY_UNITS = {"": 1, "m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024**2, "tb": 1024**2}
_MEMORY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_CLOCK = re.compile(r"^(?:([0-9]{1,6})-)?([0-9]{1,9}):([0-9]{1,2}):([0-9]{1,2})$")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # fullmatch: "$" would let a final newline through
_COUNTS = {"cores": 1, "nodes": 1, "gpus": 0}  # name -> the least it may be


def split(given: Mapping[str, Any] | None) -> tuple[Resources, dict[str, Any]]:
    """``submit``'s ``resources``: the scheduler's (checked) and the shared files by URI (``name: scheme://...``,
    checked where they are fetched). A name that is neither is refused here, in one line."""
    if given is not None and not isinstance(given, Mapping):
        raise InvalidValue("resources", f"write them as a mapping of {', '.join(RESOURCE_NAMES)}")
    asked = {name: value for name, value in (given or {}).items() if name in RESOURCE_NAMES}
    files = {name: value for name, value in (given or {}).items() if name not in RESOURCE_NAMES}
    for name, value in files.items():
        if not (isinstance(value, str) and "://" in value):
            raise InvalidValue(
                f"resources.{printable(str(name), 40)}",
                f"there is no resource {printable(str(name), 40)!r}; the resources are {', '.join(RESOURCE_NAMES)}, "
                "or shared files by URI (name: scheme://...)",
            )
    return checked(asked), files


def checked(given: Mapping[str, Any] | None, where: str = "resources") -> Resources:
    """Resources as a job's info holds them; InvalidValue (one line, naming the resource) for any mistake."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidValue(where, f"write them as a mapping of {', '.join(RESOURCE_NAMES)}")
    out: Resources = {}
    for name, value in given.items():
        if value is None or value == "":
            continue  # not asked: the context's default, or the scheduler's
        out[str(name)] = _one(str(name), value, f"{where}.{printable(str(name), 40)}")
    return out


def merged(defaults: Mapping[str, int | str], asked: Mapping[str, int | str]) -> Resources:
    """A context's default resources, with what a job asked for over them."""
    return {**defaults, **asked}


def _one(name: str, value: Any, where: str) -> int | str:
    if name in _COUNTS:
        return _count(value, _COUNTS[name], where)
    if name == "memory":
        return memory_mib(value, where)
    if name == "walltime":
        return walltime_seconds(value, where)
    if name in ("partition", "account"):
        if isinstance(value, str) and _NAME.fullmatch(value):
            return value
        raise InvalidValue(where, f"{_shown(value)} is not a name; use letters, digits, _ . - (at most 64)")
    raise InvalidValue(where, f"there is no resource {name!r}; the resources are {', '.join(RESOURCE_NAMES)}")


def _count(value: Any, least: int, where: str) -> int:
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and is_whole(value.strip(), 7):  # ASCII digits: "²" is a digit to isdigit()
        number = int(value)
    if number is None or not least <= number <= MOST_COUNT:
        raise InvalidValue(where, f"{_shown(value)} is not a whole number from {least} to {MOST_COUNT:,}")
    return number


def memory_mib(value: Any, where: str = "memory") -> int:
    """Memory in MiB: ``512M``, ``128G``, ``1.5T`` or a number of MiB."""
    match = _MEMORY.match(value) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        mib = float(value)
    elif match and match.group(2).lower() in _MEMORY_UNITS:
        mib = float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    else:
        raise InvalidValue(where, f"{_shown(value)} is not an amount of memory; write it as 512M, 128G or 1T")
    if not 1 <= mib <= MOST_MEMORY_MIB:
        raise InvalidValue(where, f"{_shown(value)} is not from 1M to 1024T")
    return int(mib)


def walltime_seconds(value: Any, where: str = "walltime") -> int:
    """A walltime in seconds: ``90s``, ``15m``, ``12h``, ``2d``, ``HH:MM:SS``, ``D-HH:MM:SS`` or seconds."""
    seconds: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        clock = _CLOCK.match(value.strip())
        if clock:
            days, hours, minutes, secs = (int(part or 0) for part in clock.groups())
            seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
        else:
            seconds = text_seconds(value)
    if seconds is None:
        raise InvalidValue(where, f"{_shown(value)} is not a walltime; write it as 90m, 12h or 12:00:00")
    if not 1 <= seconds <= MOST_WALLTIME:
        raise InvalidValue(where, f"{_shown(value)} is not from 1 second to a year")
    return int(seconds)


def clock(seconds: int) -> str:
    """Seconds as the schedulers write a walltime: ``HH:MM:SS`` (hours may pass 24)."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def shown(resources: Mapping[str, int | str]) -> str:
    """Resources for a person: ``cores=4 memory=128G walltime=12:00:00 partition=long``."""
    parts = []
    for name in RESOURCE_NAMES:
        if name not in resources:
            continue
        value = resources[name]
        if name == "memory" and isinstance(value, int):
            value = f"{value // 1024}G" if value % 1024 == 0 else f"{value}M"
        elif name == "walltime" and isinstance(value, int):
            value = clock(value)
        parts.append(f"{name}={value}")
    return " ".join(parts)


def _shown(value: Any) -> str:
    return printable(repr(value), 40)
