"""What a job function receives from moi, besides its own arguments.

Every job function may take ``status_update`` (a callable that sets the job's
status text), ``workdir`` (its job directory, when it has one) and the original
moi's names: ``moi_update_status`` (the same callable), ``moi_context`` (the
context's name) and ``moi_parent_id`` (the id of the job's group). A function
with ``**kwargs`` gets them all; any other gets only those its signature names,
so ``def add(a, b)`` is a job function too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from moi.compute.context import ByName

MOI_NAMES = ("status_update", "moi_update_status", "moi_context", "moi_parent_id", "workdir")


def accepted(func: Callable[..., Any]) -> frozenset[str] | None:
    """The names of moi's arguments ``func`` takes; None for all of them (it has ``**kwargs``)."""
    if isinstance(func, ByName):
        func = func.resolve()  # its own signature, not the wrapper's
    try:
        return _accepted(func)
    except TypeError:  # an unhashable callable: look at it each time
        return _accepted.__wrapped__(func)


@functools.lru_cache(maxsize=256)
def _accepted(func: Callable[..., Any]) -> frozenset[str] | None:
    # On every job's path: inspect.signature costs about 100 us, so each function is looked at once.
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it none of moi's
        return frozenset()
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return frozenset(named.intersection(MOI_NAMES))


def moi_kwargs(
    takes: frozenset[str] | None, status_update: Callable[[str], None], info: dict[str, Any], workdir: str = ""
) -> dict[str, Any]:
    """moi's keyword arguments for a call, limited to what the function ``takes`` (see ``accepted``);
    ``workdir`` only for a job that has a directory."""
    offered = {
        "status_update": status_update,
        "moi_update_status": status_update,
        "moi_context": info.get("context"),
        "moi_parent_id": info.get("parent"),
    }
    if workdir:
        offered["workdir"] = workdir
    if takes is None:
        return offered
    return {name: value for name, value in offered.items() if name in takes}
