"""A job's time limit and retry policy: checked where it enters, carried in its info object, decided on.

A job carries only what was asked of it, so a plain job's info holds none of these fields:

- ``time_limit``, ``soft_time_limit``: seconds its function may run (the soft one warns first);
- ``attempt``, ``max_attempts``: this attempt (1 is the first) and how many it may have (retries + 1);
- ``retry_on``: the exception names (``"OSError"``, ``"mymodule.Busy"``) and shell exit codes
  (numbers) a retry is for; absent: any failure but a cancel;
- ``backoff``: ``[first, largest]`` delay in seconds before a retry; each doubles the last, with jitter;
- ``idempotent``: ``true`` when the job may run again after its engine was lost;
- ``retry_at``: while it waits ``Queued`` for its next attempt, when that is due (epoch seconds);
- ``attempts``: the earlier attempts, oldest first, at most ``KEPT_ATTEMPTS``, each result bounded.

``Policy.fields`` makes them; ``next_attempt`` decides, as an attempt fails, whether another comes.
"""

from __future__ import annotations

import builtins
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from moi.core import errors, values
from moi.core.errors import InvalidValue
from moi.core.redact import printable

DEFAULT_MAX_RETRIES = 10  # [moi] max_retries: the most retries a job may ask for
DEFAULT_BACKOFF = (1.0, 600.0)  # seconds: the first delay, and the largest
LONGEST = 366 * 86400.0  # a time limit or a delay of more than a year is surely a mistake
KEPT_ATTEMPTS = 10  # earlier attempts kept in the info: the first, and the latest after it
KEPT_RESULT = 4000  # characters of an earlier attempt's traceback kept
JOB_TIME_LIMIT = "JobTimeLimit"  # the name a time limit's failure matches in retry_on
MOST_RETRY_ON = 50  # names and exit codes a retry_on may hold
# The fields of a policy as asked for (``Policy``'s), in every way a job comes in: submit, the HTTP API, a service.
POLICY_NAMES = ("time_limit", "soft_time_limit", "retries", "retry_on", "backoff", "idempotent")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def text_seconds(text: str) -> float | None:
    """Seconds in a duration written as text (``90s``, ``15m``, ``2h``, ``1d``, ``2w``, or a bare number of
    seconds); None when the text is not one. The one syntax of moi's durations (retention's too)."""
    match = _DURATION.match(text)
    return float(match.group(1)) * _UNITS[match.group(2) or "s"] if match else None


def seconds_of(value: Any, what: str) -> float:
    """A positive duration in seconds: a number, or text such as ``90s``, ``15m``, ``2h``, ``1d``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (found := text_seconds(value)) is not None:
        seconds = found
    else:
        raise InvalidValue(what, f"{printable(repr(value), 40)} is not a duration; write it as 90s, 15m or 2h")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidValue(
            what, f"{printable(repr(value), 40)} is not a duration above zero; write it as 90s, 15m or 2h"
        )
    if seconds > LONGEST:
        raise InvalidValue(what, f"{printable(repr(value), 40)} is longer than a year")
    return seconds


def shown(seconds: float) -> str:
    """A duration as a user wrote it: ``15m`` for 900 seconds, ``90s`` for 90."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Policy:
    """A job's limits and retries as asked for, before they are checked (see ``fields``)."""

    time_limit: Any = None
    soft_time_limit: Any = None
    retries: Any = None
    retry_on: Any = None
    backoff: Any = None
    idempotent: Any = None

    def fields(self, max_retries: int = DEFAULT_MAX_RETRIES, default_time_limit: float | None = None) -> dict[str, Any]:
        """The info fields of this policy, checked; InvalidValue (one line naming the field) otherwise.

        ``default_time_limit``: the context's, used when the job names none.
        """
        fields: dict[str, Any] = {}
        fields.update(_limits(self.time_limit, self.soft_time_limit, default_time_limit))
        fields.update(_retries(self.retries, self.retry_on, self.backoff, self.idempotent, max_retries))
        return fields

    def merged(self, under: Policy) -> Policy:
        """This policy, with what it leaves unset taken from ``under`` (a step's over its service's)."""
        return Policy(**{name: _first_set(getattr(self, name), getattr(under, name)) for name in POLICY_NAMES})


def _first_set(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _limits(time_limit: Any, soft: Any, default: float | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    hard = seconds_of(time_limit, "time_limit") if time_limit is not None else default
    if hard is not None:
        fields["time_limit"] = hard
    if soft is not None:
        fields["soft_time_limit"] = seconds_of(soft, "soft_time_limit")
        if hard is not None and fields["soft_time_limit"] >= hard:
            raise InvalidValue("soft_time_limit", "it must be shorter than time_limit, which ends the job")
    return fields


def _retries(retries: Any, retry_on: Any, backoff: Any, idempotent: Any, most: int) -> dict[str, Any]:
    count = _retry_count(retries, most)
    fields: dict[str, Any] = {}
    if idempotent is not None and not isinstance(idempotent, bool):
        raise InvalidValue("idempotent", f"{printable(repr(idempotent), 40)} is not true or false")
    if idempotent and not count:
        why = "idempotent needs retries of 1 or more: a job whose engine was lost runs again as one of its retries"
        raise InvalidValue("idempotent", why)
    if idempotent:
        fields["idempotent"] = True
    if count:
        fields.update(attempt=1, max_attempts=count + 1)
    if retry_on is not None:
        names = retry_names(retry_on)
        if names:
            fields["retry_on"] = names
    if backoff is not None:
        fields["backoff"] = backoff_of(backoff)
    if not count and ("retry_on" in fields or "backoff" in fields):
        raise InvalidValue("retries", "retry_on and backoff need retries of 1 or more")
    return fields


def _retry_count(retries: Any, most: int) -> int:
    if retries is None:
        return 0
    if isinstance(retries, str) and values.is_whole(retries.strip()):  # ASCII digits: int() refuses '²
        retries = int(retries.strip())
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= most:
        raise InvalidValue("retries", f"{printable(repr(retries), 40)} is not a whole number from 0 to {most}")
    return retries


def retry_names(retry_on: Any) -> list[str | int]:
    """``retry_on`` as stored: exception classes and names as names (checked), exit codes as numbers.
    One name, class or code, or a list, tuple or set of them; at most ``MOST_RETRY_ON``."""
    if isinstance(retry_on, str | int | type):
        retry_on = [retry_on]
    if not isinstance(retry_on, list | tuple | set | frozenset):  # bytes or a dict would be taken apart quietly
        raise InvalidValue("retry_on", "give exception names or shell exit codes, as a list")
    if len(retry_on) > MOST_RETRY_ON:
        raise InvalidValue("retry_on", f"it names {len(retry_on)} failures; give at most {MOST_RETRY_ON}")
    return [_retry_name(entry) for entry in retry_on]


def _retry_name(entry: Any) -> str | int:
    if isinstance(entry, type) and issubclass(entry, BaseException):
        return entry.__name__ if entry.__module__ == "builtins" else f"{entry.__module__}.{entry.__qualname__}"
    if isinstance(entry, str) and values.is_whole(entry.strip(), signed=True):
        entry = int(entry.strip())
    if isinstance(entry, int) and not isinstance(entry, bool):
        if not 1 <= entry <= 255:
            raise InvalidValue("retry_on", f"exit code {entry} is not one a command can exit with (1 to 255)")
        return entry
    if not isinstance(entry, str) or not _DOTTED_NAME.match(entry.strip()) or len(entry) > 200:
        raise InvalidValue("retry_on", f"{printable(repr(entry), 60)} is not an exception name or an exit code")
    name = entry.strip()
    if "." not in name and name != JOB_TIME_LIMIT and not _is_builtin_exception(name) and not _is_moi_error(name):
        raise InvalidValue(
            "retry_on",
            f"{name!r} is neither a built-in exception nor one of moi's; name others with their module, as "
            f"mymodule.{name}",
        )
    return name


def _is_builtin_exception(name: str) -> bool:
    found = getattr(builtins, name, None)
    return isinstance(found, type) and issubclass(found, BaseException)


def _is_moi_error(name: str) -> bool:
    """One of moi's own errors (``JobTimeLimit``, ``StepFailed``, ...), which a failure names bare too."""
    found = getattr(errors, name, None)
    return isinstance(found, type) and issubclass(found, errors.MoiError)


def backoff_of(backoff: Any) -> list[float]:
    """``[first, largest]`` delays in seconds: one duration (the first; the largest stays the default) or two
    (a list, or text such as ``2s,5m``)."""
    if isinstance(backoff, str) and "," in backoff:
        backoff = [part.strip() for part in backoff.split(",")]
    if isinstance(backoff, list | tuple) and len(backoff) == 2:
        first, largest = seconds_of(backoff[0], "backoff"), seconds_of(backoff[1], "backoff")
    else:
        first, largest = seconds_of(backoff, "backoff"), max(DEFAULT_BACKOFF[1], seconds_of(backoff, "backoff"))
    if largest < first:
        raise InvalidValue("backoff", "its largest delay is shorter than its first")
    return [first, largest]


# deciding, as an attempt fails -----------------------------------------------------------------


def retry_matches(info: dict[str, Any], names: Iterable[str], exit_code: int | None = None) -> bool:
    """Whether a failure is one ``retry_on`` is for: ``names`` are the failure's exception classes, each
    as ``name`` and ``module.name`` (every class of its MRO); ``exit_code``, a shell command's."""
    wanted = info.get("retry_on")
    if not isinstance(wanted, list) or not wanted:
        return True
    if exit_code is not None and exit_code in wanted:
        return True
    return any(name in wanted for name in names)


def exception_names(error: BaseException) -> list[str]:
    """The names ``retry_on`` may give for ``error``: every class it is an instance of, bare and with its module."""
    names: list[str] = []
    for cls in type(error).__mro__:
        names += [cls.__name__, f"{cls.__module__}.{cls.__qualname__}"]
    return names


def attempts_left(info: dict[str, Any]) -> bool:
    """Whether the job may have another attempt: its ``attempt`` is below its ``max_attempts`` (both whole
    numbers; a job without them, or with odd ones, has none)."""
    attempt, most = info.get("attempt"), info.get("max_attempts")
    return _whole(attempt) and _whole(most) and attempt < most


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def delay_before(info: dict[str, Any], rand: random.Random | None = None, longest: float = LONGEST) -> float:
    """Seconds before the next attempt: the first delay doubled per attempt so far, at most the largest,
    with jitter (between half and all of it), so that jobs that failed together do not retry together.
    Never more than ``longest`` (nor a year); a stored backoff that is not two durations counts as the default."""
    first, largest = DEFAULT_BACKOFF
    backoff = info.get("backoff")
    if isinstance(backoff, list) and len(backoff) == 2 and all(_delay(x) for x in backoff):
        first, largest = float(backoff[0]), float(backoff[1])
    attempt = info.get("attempt")
    doublings = min(max(attempt - 1, 0), 60) if _whole(attempt) else 0
    full = min(largest, first * 2.0**doublings, longest, LONGEST)
    return float(max(0.0, full) * (0.5 + 0.5 * (rand or random).random()))


def _delay(value: Any) -> bool:
    """A stored delay moi can count with: a finite number of seconds, none below zero (NaN and inf are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def next_attempt(
    info: dict[str, Any],
    ended: dict[str, Any],
    moment: float,
    rand: random.Random | None = None,
    longest: float = LONGEST,
) -> dict[str, Any]:
    """``info`` changed to wait ``Queued`` for its next attempt; ``ended``: how this attempt ended
    (``result``, ``result_format``, ``date_end``), kept, bounded, in ``attempts``. ``longest``: the most
    seconds it may wait (its info's time to live in Redis: see ``delay_before``)."""
    stored_attempt = info.get("attempt")
    attempt = stored_attempt if _whole(stored_attempt) else 1
    kept = {
        "attempt": attempt,
        "engine": info.get("engine"),
        "date_start": info.get("date_start"),
        "date_end": ended.get("date_end"),
        "result": _bounded(ended.get("result")),
        "result_format": ended.get("result_format", "text"),
    }
    stored = info.get("attempts")  # anything but a list (written behind moi's back) starts a new one
    earlier = [entry for entry in stored if isinstance(entry, dict)] if isinstance(stored, list) else []
    earlier.append(kept)
    if len(earlier) > KEPT_ATTEMPTS:
        earlier = earlier[:1] + earlier[-(KEPT_ATTEMPTS - 1) :]
    info.update(
        status="Queued",
        attempt=attempt + 1,
        attempts=earlier,
        retry_at=round(moment + delay_before(info, rand, longest), 3),
        result=None,
        date_start=None,
        engine=None,
    )
    return info


def _bounded(result: Any) -> Any:
    if isinstance(result, str) and len(result) > KEPT_RESULT:
        return "…" + result[-KEPT_RESULT:]  # a traceback's end says what failed
    return result


def time_limit_reason(info: dict[str, Any], soft: bool = False) -> str:
    """The one line a job that ran past its limit fails with: ``Time limit of 15m exceeded``."""
    limit = info.get("soft_time_limit" if soft else "time_limit")
    text = shown(float(limit)) if isinstance(limit, int | float) else "its limit"
    return f"{'Soft time' if soft else 'Time'} limit of {text} exceeded"
