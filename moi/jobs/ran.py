"""What a job runs, as its info shows it (the ``ran`` field): bounded text, secrets redacted.

The call itself is pickled in the queue (``moi.queue.jobqueue``), which no page reads. At submit time
its description is kept in the info object, where the job's page and ``GET /api/v1/jobs/ID`` show it:

- a function: ``{"function": "module.name", "args": [repr, ...], "kwargs": {name: repr}}``
- a command: ``{"command": text, "cmd_type": "system"}`` (a shell command) or ``"python"`` (code)
- a service: ``{"service": name, "params": {name: value}}``

Every text is at most ``FIELD_LIMIT`` characters (longer: cut, with an ellipsis and a note of its length),
at most ``MOST_ITEMS`` arguments are kept (a last item says how many more), and a keyword or parameter
that is secret (marked so, or named like ``password``, ``secret``, ``token``) shows as ``***``.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from moi.core.redact import MASK

FIELD_LIMIT = 2048  # characters of one argument, parameter, command or name
MOST_ITEMS = 20  # arguments (and keywords, and parameters) kept
SECRET_NAME = re.compile(r"secret|passw|token|api_?key|credential|private_?key", re.IGNORECASE)

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, FIELD_LIMIT, FIELD_LIMIT, FIELD_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 50


def bounded(text: str, total: int = 0) -> str:
    """``text`` cut to ``FIELD_LIMIT`` characters, with a note of its length (``total``, if it was cut before);
    lone surrogates escaped (JSON and Redis's Lua hold it)."""
    total = max(total, len(text) if len(text) > FIELD_LIMIT else 0)
    text = text[:FIELD_LIMIT].encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{text}… (cut: {total} characters, the first {FIELD_LIMIT} shown)" if total else text


def is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def shown_value(value: Any) -> str:
    """A value as Python writes it (its repr), bounded; a value whose repr fails says so."""
    try:
        if isinstance(value, (str, bytes)) and len(value) > FIELD_LIMIT:  # its length, not reprlib's middle cut
            return bounded(repr(value[:FIELD_LIMIT])[:FIELD_LIMIT], len(value))
        return bounded(_REPR.repr(value))
    except Exception as error:  # a broken __repr__ must not refuse the job
        return bounded(f"<unrepresentable {type(value).__name__}: {error!r}>")


def function_call(func: Callable[..., Any], args: Iterable[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A Python call: the function's name, its arguments' reprs, keywords named like secrets redacted."""
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return {
        "function": bounded(f"{module}.{name}" if module else str(name)),
        "args": _items([shown_value(value) for value in args], "arguments"),
        "kwargs": _named({key: shown_value(value) for key, value in kwargs.items()}, set()),
    }


def command(kind: str, text: str) -> dict[str, Any]:
    """A command: shell (``system``) or Python code (``python``), as given."""
    return {"command": bounded(str(text)), "cmd_type": kind}


def service_call(name: str, params: Mapping[str, Any], secret: Iterable[str] = ()) -> dict[str, Any]:
    return {"service": bounded(name), "params": redacted_params(params, secret)}


def masked_params(params: Mapping[str, Any], secret: Iterable[str] = ()) -> dict[str, Any]:
    """Parameters with the secret ones ``***`` (as the job's info keeps them: a page reads it)."""
    hidden = set(secret)
    return {key: MASK if key in hidden or is_secret(key) else value for key, value in params.items()}


def redacted_params(params: Mapping[str, Any], secret: Iterable[str] = ()) -> dict[str, Any]:
    """Parameters as a page may show them: secret ones ``***``, long texts bounded (numbers as they are)."""
    kept = {key: bounded(value) if isinstance(value, str) else value for key, value in params.items()}
    return _named(kept, set(secret))


def _named(values: dict[str, Any], secret: set[str]) -> dict[str, Any]:
    shown = {}
    for index, (key, value) in enumerate(values.items()):
        if index == MOST_ITEMS:
            shown["…"] = f"{len(values) - MOST_ITEMS} more not shown"
            break
        shown[bounded(str(key))] = MASK if key in secret or is_secret(str(key)) else value
    return shown


def _items(values: list[str], what: str) -> list[str]:
    if len(values) <= MOST_ITEMS:
        return values
    return [*values[:MOST_ITEMS], f"… ({len(values) - MOST_ITEMS} more {what} not shown)"]
