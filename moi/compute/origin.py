"""Where a job runs on its engine: the directory it was submitted from (first on ``sys.path``), or its own.

``in_directory`` is entered around every job's function (``moi.compute.running``) and every block of a
batch's items (``moi.compute.batch_blocks``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


@contextmanager
def in_directory(origin: tuple[Any, ...] | None) -> Iterator[None]:
    """Run where the job was submitted from, first on ``sys.path`` as with ``python -c``, on its host;
    in its job directory when it has one (``origin``'s third part), with the submitter's still on the path.

    Elsewhere (another host, a directory that is gone) the job runs where the
    engine is. Modules imported from the directory are forgotten afterwards,
    so the next job, perhaps from another directory, imports its own.
    """
    host, path, workdir = (*(origin or ()), "", "", "")[:3]
    if not path or host != socket.gethostname() or not os.path.isdir(path):
        path = ""
    if not path and not workdir:
        yield
        return
    before, modules = os.getcwd(), set(sys.modules)
    os.chdir(workdir or path)
    if path:
        sys.path.insert(0, path)
    try:
        yield
    finally:
        os.chdir(before)
        if path:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
            if len(sys.modules) > len(modules):  # only then can a module from there be cached
                _forget_modules_from(path, set(sys.modules) - modules)


def workdir_of(origin: tuple[Any, ...] | None) -> str:
    """The job directory a job's call names ('' for none)."""
    return origin[2] if origin and len(origin) > 2 else ""


def moved(origin: tuple[Any, ...] | None, info: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """``origin`` with its job directory where ``info`` says it now is: a service's per-state roots move it
    (``moi.services.state_directories`` sets ``directory``), and a retry or a redelivery runs it there.
    Only a path as moi makes one counts (absolute, normal, ending in the job's id); else ``origin`` as it is."""
    directory, job_id = info.get("directory"), str(info.get("id"))
    if origin is None or not workdir_of(origin) or not isinstance(directory, str) or not os.path.isabs(directory):
        return origin
    if os.path.normpath(directory) != directory or os.path.basename(directory) != job_id:
        return origin
    return (*origin[:2], directory, *origin[3:])


def _forget_modules_from(path: str, names: set[str]) -> None:
    """Forget the modules the job imported from ``path``, never moi's own (a checkout of
    moi may be that directory: a second copy of its classes would break isinstance)."""
    prefix = os.path.join(path, "")
    for name in names:
        module = sys.modules.get(name)
        if name == "moi" or name.startswith("moi.") or module is None:
            continue
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]
