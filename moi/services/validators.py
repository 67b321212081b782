"""Validators: plain functions that look at a submitted file and say True (fine) or False.

A validator gets the file's bytes, or its path when the input is a file on disk,
and returns a bool. ``collect(module)`` takes every public function of a module
(names starting with ``_`` are skipped), so a project keeps its own in one file.
A service names them by function or, in YAML, by name: the ones here, or
``pkg.mod:func``. They run before anything is stored or queued (``check_inputs``).
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from moi.core.config import imported
from moi.core.errors import ServiceDefinitionError, ValidationFailed

Validator = Callable[[Any], bool]
HEAD = 1 << 16  # what the magic-byte and format checks read of a large file


def _head(source: Any, size: int = HEAD) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source[:size])
    with open(os.fspath(source), "rb") as handle:
        return handle.read(size)


def _whole(source: Any) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    with open(os.fspath(source), "rb") as handle:
        return handle.read()


def non_empty(source: Any) -> bool:
    """The file holds at least one byte."""
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source) > 0
    return os.path.getsize(os.fspath(source)) > 0


def utf8_text(source: Any) -> bool:
    """The file is UTF-8 text, with no NUL bytes."""
    data = _whole(source)
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def fasta(source: Any) -> bool:
    """FASTA: a '>' header line first, then sequence lines of letters, '*' and '-'."""
    if not utf8_text(source):
        return False
    lines = [line.strip() for line in _whole(source).decode().splitlines() if line.strip()]
    if not lines or not lines[0].startswith(">"):
        return False
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*-.")
    sequences = [line for line in lines if not line.startswith((">", ";"))]
    return bool(sequences) and all(set(line) <= allowed for line in sequences)


def pdb(source: Any) -> bool:
    """A PDB coordinate file: text whose records include ATOM or HETATM lines."""
    head = _head(source)
    if b"\x00" in head:
        return False
    return any(line.startswith((b"ATOM  ", b"HETATM")) for line in head.splitlines())


def png(source: Any) -> bool:
    """A PNG image, by its signature."""
    return _head(source, 8) == b"\x89PNG\r\n\x1a\n"


def jpeg(source: Any) -> bool:
    """A JPEG image, by its start-of-image marker."""
    return _head(source, 3) == b"\xff\xd8\xff"


def gif(source: Any) -> bool:
    """A GIF image, by its signature."""
    return _head(source, 6) in (b"GIF87a", b"GIF89a")


def image(source: Any) -> bool:
    """A PNG, JPEG or GIF image."""
    return png(source) or jpeg(source) or gif(source)


SHIPPED: dict[str, Validator] = {
    func.__name__: func for func in (non_empty, utf8_text, fasta, pdb, png, jpeg, gif, image)
}


def collect(module: types.ModuleType) -> list[Validator]:
    """Every public function defined in ``module`` (names starting with ``_`` skipped), in source order."""
    found = [
        value
        for name, value in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module.__name__
    ]
    return sorted(found, key=lambda func: func.__code__.co_firstlineno)


def resolve(named: Validator | str) -> Validator:
    """A validator given by function, by a shipped name, or as ``pkg.mod:func``."""
    if callable(named):
        return named
    if named in SHIPPED:
        return SHIPPED[named]
    try:
        found = imported(str(named))
    except (ImportError, AttributeError) as error:
        raise ServiceDefinitionError(f"validator {named!r} cannot be imported ({error})") from None
    except ValueError:
        found = None
    if not callable(found):
        raise ServiceDefinitionError(
            f"validator {named!r} is not one of {sorted(SHIPPED)} nor a function given as package.module:function"
        )
    validator: Validator = found
    return validator


def name_of(validator: Validator | str) -> str:
    if isinstance(validator, str):
        return validator
    return getattr(validator, "__name__", repr(validator))


def check_inputs(validators: Iterable[Validator | str], inputs: Mapping[str, Any]) -> None:
    """Every validator on every input (name -> bytes or path); ValidationFailed at the first refusal."""
    chosen = [(name_of(named), resolve(named)) for named in validators]
    for file_name, source in inputs.items():
        for label, validator in chosen:
            try:
                accepted = validator(source)
            except Exception as error:  # a validator that breaks on odd input refuses it, saying why
                raise ValidationFailed(f"Input {file_name!r}", f"{type(error).__name__}: {error}", label) from None
            if not accepted:
                raise ValidationFailed(f"Input {file_name!r}", "it is not what the service accepts", label)
