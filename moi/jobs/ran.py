"""What a job runs, as its info shows it (the ``ran`` field): bounded text, secrets redacted.

The call itself is pickled in the queue (``moi.queue.jobqueue``), which no page reads. At submit time
its description is kept in the info object, where the job's page and ``GET /api/v1/jobs/ID`` show it:

- a function: ``{"function": "module.name", "args": [repr, ...], "kwargs": {name: repr}}``
- a command: ``{"command": text, "cmd_type": "system"}`` (a shell command) or ``"python"`` (code)
- a service: ``{"service": name, "params": {name: value}}``

Every text is at most ``FIELD_LIMIT`` characters (longer: cut, with an ellipsis and a note of its length),
at most ``MOST_ITEMS`` arguments are kept (a last item says how many more), and a keyword or parameter
that is secret (marked so, or named like ``password``, ``secret``, ``token``, ``passphrase``, ``pw``)
shows as ``***``. Inside every text shown, so too: a URL's password (``https://u:***@h/``), the value of
``NAME=value`` with NAME named like a secret (``PGPASSWORD=***``, ``?pw=***``), an ``Authorization:``
header's credentials, and in an argument's repr, the value of a dict key named like a secret.
"""

from __future__ import annotations

import itertools
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from moi.core.redact import MASK

FIELD_LIMIT = 2048  # characters of one argument, parameter, command or name
MOST_ITEMS = 20  # arguments (and keywords, and parameters) kept
TOTAL_LIMIT = 8 * FIELD_LIMIT  # characters of all arguments together: the info goes to every page watching it
_UNSHOWN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# "auth" but not "author"/"authority" (authorization is), and "pw"/"pwd" only as a word of the name.
SECRET_NAME = re.compile(
    r"secret|passw|phrase|token|api_?key|credential|private_?key|auth(?!or(?!i[sz]))|(?<![a-z])pwd?(?![a-z])",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s/?#@'\"]+(?=@)", re.IGNORECASE)
_ASSIGNED = re.compile(r"""(?P<name>[A-Za-z_][\w.-]*)(?P<sep>=)(?P<value>"[^"]*"|'[^']*'|[^\s&;,'"]+)""")
_AUTH_HEADER = re.compile(r"(?P<keep>authorization\s*:\s*(?:[a-z-]+\s+)?)[^\s'\",]+", re.IGNORECASE)
_MASKED_LOOK = 4 * 2048  # characters of a text searched for secrets (more than is ever shown)


def masked_text(text: str) -> str:
    """``text`` with the secrets it may carry as ``***``: a URL's password, ``NAME=value`` with NAME named
    like a secret, an ``Authorization:`` header's credentials."""
    text = _URL_PASSWORD.sub(lambda found: found["keep"] + MASK, text)
    text = _AUTH_HEADER.sub(lambda found: found["keep"] + MASK, text)
    return _ASSIGNED.sub(lambda found: _assigned(found), text)


def _assigned(found: re.Match[str]) -> str:
    return f"{found['name']}={MASK}" if is_secret(found["name"]) else found.group()


class _MaskingRepr(reprlib.Repr):
    """reprlib's bounded repr, with the value of a dict key named like a secret as ``'***'``, at any depth."""

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = []
        for key in itertools.islice(x, self.maxdict):
            secret = isinstance(key, str) and is_secret(key)
            value = repr(MASK) if secret else self.repr1(x[key], level - 1)
            pieces.append(f"{self.repr1(key, level - 1)}: {value}")
        if len(x) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"


_REPR = _MaskingRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, FIELD_LIMIT, FIELD_LIMIT, FIELD_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 50


def bounded(text: str, total: int = 0) -> str:
    """``text`` cut to ``FIELD_LIMIT`` characters, with a note of its length (``total``, if it was cut before);
    control characters (but tab and line ends) and lone surrogates escaped, as ``moi.core.values`` wants
    what is stored: a command with an escape sequence is still taken, and shown as ``\\x1b``."""
    total = max(total, len(text) if len(text) > FIELD_LIMIT else 0)
    text = masked_text(text[:_MASKED_LOOK])  # before the cut: a secret cut in half is still found
    text = _UNSHOWN.sub(
        lambda found: found.group().encode("unicode_escape", "backslashreplace").decode(), text[:FIELD_LIMIT]
    )
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


def function_call(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A Python call: the function's name, its arguments' reprs, keywords named like secrets redacted. Only the
    arguments kept are written out (a sweep of a million items costs no million reprs)."""
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or type(func).__name__
    keywords = list(kwargs.items())[:MOST_ITEMS]
    return {
        "function": bounded(f"{module}.{name}" if module else str(name)),
        "args": _items([shown_value(value) for value in args[:MOST_ITEMS]], "arguments", len(args)),
        "kwargs": _named({key: MASK if is_secret(key) else shown_value(value) for key, value in keywords}, len(kwargs)),
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
    kept = {
        key: bounded(value) if isinstance(value, str) else value for key, value in masked_params(params, secret).items()
    }
    return _named(kept, len(kept))


def _named(values: dict[str, Any], total: int) -> dict[str, Any]:
    """At most ``MOST_ITEMS`` names and ``TOTAL_LIMIT`` characters; a last entry, ``…``, says how many more."""
    shown: dict[str, Any] = {}
    used = 0
    for key, value in list(values.items())[:MOST_ITEMS]:
        used += len(str(value))
        if used > TOTAL_LIMIT:
            break
        shown[bounded(str(key))] = value
    if len(shown) < total:
        shown["…"] = f"{total - len(shown)} more not shown"
    return shown


def _items(values: list[str], what: str, total: int) -> list[str]:
    """At most ``MOST_ITEMS`` values and ``TOTAL_LIMIT`` characters; a last item says how many more there are."""
    kept: list[str] = []
    used = 0
    for value in values[:MOST_ITEMS]:
        used += len(value)
        if used > TOTAL_LIMIT:
            break
        kept.append(value)
    if len(kept) == total:
        return kept
    return [*kept, f"… ({total - len(kept)} more {what} not shown)"]
