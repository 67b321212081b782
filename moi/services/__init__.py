"""Services: named job types that a scientific web application publishes.

A service has typed parameters, validators that check its inputs before anything
is queued, hooks that run on an engine in the job's directory (``preprocess``,
``run``, ``postprocess``, ``complete``; ``archive`` and ``expire`` later, by
retention), and mails its submitter when it ends. Define one in Python
(subclass ``Service``) or in YAML (a chain of command-line steps, see
``moi.services.documents``); submit with ``moi.services.submit``, ``moi run`` or the page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import IO, Any

from .. import connections, queue
from .. import job as jobs
from ..errors import ValidationFailed
from ..fetch import is_uri
from ..handle import JobHandle
from ..retention import parse_duration, retention_fields
from . import places, validators
from .definition import Parameter, Service
from .documents import StepService
from .lifecycle import carried, first_state, run_service
from .registry import dump, get, known, load_into, register, unregister

__all__ = [
    "Parameter",
    "Service",
    "StepService",
    "dump",
    "get",
    "known",
    "load_into",
    "register",
    "submit",
    "unregister",
    "validators",
]

_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def submit(
    name: str,
    user: str,
    params: Mapping[str, Any] | None = None,
    *,
    files: Any = None,
    email: str | None = None,
    group: str | None = None,
    url: str | None = None,
    priority: str | int | None = None,
    context: str | None = None,
    job_name: str | None = None,
) -> tuple[str, str, JobHandle]:
    """Queue a job of service ``name`` for ``user`` (into ``group``, a group id of theirs, if given).

    ``params`` are type-checked and defaulted; every input in ``files`` (paths, or names
    mapped to paths or bytes) passes the service's validators first. ValidationFailed, and
    nothing stored, otherwise. Returns ``(job_id, group_id, handle)``.
    """
    cls = get(name)
    checked = cls.checked_params(params or {})
    inputs = _inputs(files)
    validators.check_inputs(cls.validators, {n: s for n, s in inputs.items() if not _remote(s)})
    if email is not None and not _EMAIL.match(email):
        raise ValidationFailed("Email address", f"{email!r} is not an address like someone@example.org")
    fields: dict[str, Any] = {"service": cls.name, "params": checked, "starts_as": first_state(cls)}
    settings = connections.settings()
    archive_after = parse_duration(cls.archive_after, "archive_after")
    expire_after = parse_duration(cls.expire_after, "expire_after")
    fields.update(retention_fields(archive_after, expire_after, settings.keep_expired, settings.ttl))
    if email:
        fields["email"] = email
    if cls.step_names():
        fields["steps"] = cls.step_names()
    roots = places.resolved(cls.directories, settings.jobs_root)
    if cls.directories:  # the engine follows these; without any, the directory stays in the jobs root
        fields["directories"] = roots
    spec = connections.context_spec(context or settings.default_context)
    placed = jobs.Placed(files=inputs, workdir=True, root=roots["incoming"] if cls.directories else None)
    level = queue.priority_of(priority)
    return jobs.queue_job(
        spec, group or user, job_name or cls.name, url, run_service, (carried(cls), checked), {}, level, placed, fields
    )


def _inputs(files: Any) -> dict[str, Any]:
    """Inputs as name -> path or bytes; a stream is read, so the validators and the copy see the same bytes."""
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        return {os.path.basename(os.fspath(path)): os.fspath(path) for path in files}
    return {name: source.read() if hasattr(source, "read") else source for name, source in files.items()}


def _remote(source: str | bytes | IO[bytes]) -> bool:
    return isinstance(source, str) and is_uri(source)
