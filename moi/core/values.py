"""Values that reach Redis's Lua and JSON: checked where they enter, refused with one line naming the field.

Every info object is JSON that Redis's Lua scripts decode (cjson) and encode again as a job is
queued and taken. cjson holds numbers as doubles and has no NaN or infinity; Python's ``json``
writes both (``NaN``, ``Infinity``, ``1e999`` read back as inf) and any integer, and writes a
lone surrogate as ``"\\ud800"``, which cjson refuses to decode. Stored, such a value stalls the
take of every engine or strands the job, so each entry (the library's submit, the HTTP API, the
websocket, service parameters) refuses, as ``InvalidValue``:

- a float that is not finite (``nan``, ``inf``, ``1e999``);
- an integer beyond ``2**53``, past which a double (and so every JSON reader) is not exact;
- a lone surrogate; a control character (tab, newline and carriage return only in free text:
  a name, an address or a URL is one line, and holds none);
- nesting deeper than ``MAX_DEPTH``, text longer than ``MAX_TEXT`` (``MAX_LINE`` for one line).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from moi.core.errors import InvalidValue
from moi.core.redact import printable

MAX_INTEGER = 2**53
MAX_DEPTH = 64  # far below cjson's 1,000, far above any parameter set or request
MAX_TEXT = 1 << 20  # characters of one text value; the HTTP API's body limit is 1 MiB too
MAX_LINE = 4096  # characters of a name, an address, a URL

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Cc but tab, LF and CR; one line also refuses those and the Unicode line and paragraph separators.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def is_whole(text: str, most: int = 18, signed: bool = False) -> bool:
    """Whether ``text`` is a whole number of at most ``most`` ASCII digits (a ``-`` first if ``signed``):
    ``str.isdigit`` passes ``'²'``, which ``int`` refuses, and ``int`` refuses over 4,300 digits."""
    sign = "-?" if signed else ""
    return re.fullmatch(rf"{sign}[0-9]{{1,{most}}}", text) is not None


def loads(text: str | bytes) -> Any:
    """JSON as ``json.loads`` reads it, but ``NaN``, ``Infinity`` and ``-Infinity``: InvalidValue.
    ValueError (not JSON) and RecursionError (nested past the parser) as ``json.loads`` raises them."""
    return json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise InvalidValue(name, "JSON has no NaN or Infinity; send a finite number")


def check(value: Any, where: str, *, line: bool = False) -> None:
    """InvalidValue, naming ``where`` (and the place inside it), unless ``value`` is JSON that
    Redis's Lua reads back as it was; ``line``: its texts are one line each (a name, a URL)."""
    # A loop, not recursion: a deep value is refused, never a RecursionError. Each entry keeps the
    # way to it as (parent's way, key), spelled out only for the message.
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)]
    limit = MAX_LINE if line else MAX_TEXT
    while stack:
        item, way, depth = stack.pop()
        if type(item) is str and len(item) <= limit and item.isprintable():
            continue  # the usual case, first and at C speed
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise InvalidValue(_spelled(where, way), f"it is nested more than {MAX_DEPTH} deep")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, inner in pairs:
                problem = text_problem(key, line) if isinstance(key, str) else None
                if problem is not None:
                    raise InvalidValue(f"the name of {_spelled(where, (way, key))}", problem)
                stack.append((inner, (way, key), depth + 1))
            continue
        problem = scalar_problem(item, line)
        if problem is not None:
            raise InvalidValue(_spelled(where, way), problem)


def _spelled(where: str, way: Any) -> str:
    """``params.a[2]``: where a value is, from the (parent's way, key) links ``check`` keeps."""
    steps = []
    while way is not None:
        way, key = way
        steps.append(f"[{key}]" if isinstance(key, int) else f".{printable(key, 40)}")
    return (where + "".join(reversed(steps))).lstrip(".")  # where "": a request's field, named as sent


def check_line(value: Any, where: str) -> None:
    """``check`` for a field that is one line of text, or None: a name, an address, a URL."""
    if value is not None:
        check(value, where, line=True)


def scalar_problem(value: Any, line: bool = False) -> str | None:
    """Why a string or number cannot be stored as it is, or None (also for anything else)."""
    if isinstance(value, str):
        return text_problem(value, line)
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        return f"an integer of {value.bit_length()} bits is beyond 2**53, the largest JSON and Lua hold exactly"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a finite number"
    return None


def text_problem(text: str, line: bool = False) -> str | None:
    """Why ``text`` cannot be stored as it is, or None; ``line``: it must be one line."""
    limit = MAX_LINE if line else MAX_TEXT
    if len(text) > limit:
        return f"it is {len(text)} characters long; at most {limit}"
    if text.isprintable():  # the usual case, at C speed: no control character, no surrogate
        return None
    found = _LONE_SURROGATE.search(text)
    if found:
        return f"it holds a lone surrogate (U+{ord(found.group()):04X}), which is not a character"
    found = (_LINE_CONTROL if line else _TEXT_CONTROL).search(text)
    if found:
        return f"it holds a control character (U+{ord(found.group()):04X})"
    return None


def mended(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD: for text moi keeps rather than refuses (the status
    text a running job's own code sets), which cjson must still be able to read."""
    return _LONE_SURROGATE.sub("\ufffd", text)
