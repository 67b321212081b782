"""Submitting a service job: parameters checked, inputs validated, the job queued.

``submit`` is ``moi.services.submit``; the service's own checks (``moi.services.definition``,
``moi.services.validators``) and the input policy (``moi.jobfiles.input_policy``) run before anything
is stored, so a refused job leaves nothing behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import IO, Any, Unpack

from moi.core import resources as job_resources
from moi.core.config import ContextSpec, Settings
from moi.core.errors import InputRefused, InvalidValue, ValidationFailed
from moi.core.policy import Policy, seconds_of, shown
from moi.core.redact import printable
from moi.core.values import text_problem
from moi.jobfiles import input_policy
from moi.jobfiles.input_policy import LOCAL, WEB
from moi.jobfiles.uri_transfers import is_uri, name_of
from moi.jobs import connections, job_policy, ran
from moi.jobs import submit as jobs
from moi.jobs.job_policy import PolicyKeywords
from moi.queue import jobqueue as queue
from moi.queue.job_handle import JobHandle
from moi.queue.jobqueue import Limits
from moi.services import state_directories, validators
from moi.services.definition import Service
from moi.services.lifecycle import carried, first_state, run_service
from moi.services.registry import get
from moi.services.retention_hooks import hooks_of
from moi.services.scheduled_run import RUN_ON
from moi.storage.retention import parse_duration, retention_fields

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
    origin: str = LOCAL,
    limits: Limits | None = None,
    anonymous: bool = False,
    resources: Mapping[str, Any] | None = None,
    **policy: Unpack[PolicyKeywords],
) -> tuple[str, str, JobHandle]:
    """Queue a job of service ``name`` for ``user`` (into ``group``, a group id of theirs, if given).

    ``params`` are type-checked and defaulted; every input in ``files`` (paths, or names mapped to paths or
    bytes) passes the service's validators first. ValidationFailed, and nothing stored, otherwise. Returns
    ``(job_id, group_id, handle)``. ``origin``: who names the inputs, LOCAL (this process's user, who may name
    any file they can read) or WEB (a web user: server paths only inside the operator's input roots; see
    ``moi.jobfiles.input_policy``). ``time_limit``, ``retries``, ...: ``submit``'s, over the service's own.
    ``limits``, ``anonymous``: an anonymous job's quota and mark. ``context``, ``resources``: over the service's."""
    cls = get(name)
    checked = cls.checked_params(params or {})
    inputs = _granted(_inputs(files), origin)
    validators.check_inputs(cls.validators, {n: s for n, s in inputs.items() if not _remote(s)})
    _check_address(email)
    settings = connections.settings()
    spec = connections.context_spec(context or cls.context or settings.default_context)
    fields = {**policy_fields(cls, Policy(**policy), spec.name, origin), **_fields(cls, checked, email, settings)}
    fields.update(resource_fields(cls, spec, resources, origin), **({"anonymous": True} if anonymous else {}))
    spec = _hooks_context(spec, fields, settings)
    incoming = fields["directories"]["incoming"] if cls.directories else None
    placed = jobs.Placed(files=inputs, workdir=True, root=incoming, origin=origin)
    call, level, owner = (carried(cls), checked), queue.priority_of(priority), group or user
    return jobs.queue_job(spec, owner, job_name or cls.name, url, run_service, call, {}, level, placed, fields, limits)


def _hooks_context(spec: ContextSpec, fields: dict[str, Any], settings: Settings) -> ContextSpec:
    """Where a service job's hooks run: an engine. A job submitted to a scheduler context runs them on the default
    context, and its run()'s work goes to the scheduler (``run_on``, see moi.services.scheduled_run)."""
    if spec.scheduler is None:
        return spec
    fields[RUN_ON] = {"context": spec.name, "resources": fields.pop("resources", {})}
    return connections.context_spec(settings.default_context)


def policy_fields(cls: type[Service], asked: Policy, context: str, origin: str) -> dict[str, Any]:
    """A service job's time limit and retries: what the submission asks for over what the service gives.
    A submission may ask for less time than the service's ``time_limit``, not more (InvalidValue)."""
    under = cls.policy()
    if _no_retries(asked.retries):  # the service's retry_on and backoff are for retries the job does not have
        under = replace(under, retry_on=None, backoff=None)
    fields = job_policy.policy_fields(asked.merged(under), context, origin)
    if asked.time_limit is not None and cls.time_limit is not None:
        most = seconds_of(cls.time_limit, "time_limit")  # checked when the service was defined
        if fields["time_limit"] > most:
            raise InvalidValue("time_limit", f"service {cls.name!r} allows at most {shown(most)}")
    return fields


def resource_fields(
    cls: type[Service], spec: ContextSpec, asked: Mapping[str, Any] | None, origin: str = LOCAL
) -> dict[str, Any]:
    """A service job's ``resources``: the context's defaults, the service's over them, the submission's over those
    (checked: InvalidValue); InvalidValue too for resources asked of a context of engines. A web user may ask for
    less than the service gives (fewer cores, less memory or time), never more, nor another partition or account."""
    own, wanted = cls.checked_resources(), job_resources.checked(asked)
    if origin == WEB:
        _within(cls.name, job_resources.merged(spec.scheduler.resources if spec.scheduler else {}, own), wanted)
    return job_policy.resource_fields(spec, job_resources.merged(own, wanted))


def _within(service: str, given: Mapping[str, int | str], wanted: Mapping[str, int | str]) -> None:
    for name, value in wanted.items():
        most = given.get(name)
        more = isinstance(value, int) and not (isinstance(most, int) and value <= most)
        if more or isinstance(value, str) and value != most:
            allowed = f"at most {most}" if isinstance(most, int) else (f"only {most}" if most else "none")
            raise InvalidValue(f"resources.{name}", f"service {service!r} allows {allowed}")


def _no_retries(retries: Any) -> bool:
    """Whether a submission asks for no retries: 0 as the policy reads it (``0``, ``"0"``, ``" 00"``).
    Unset is not: the service's own count stands. A count the policy refuses is refused with the rest."""
    if retries is None:
        return False
    return "max_attempts" not in Policy(retries=retries).fields(connections.settings().max_retries)


def _fields(cls: type[Service], checked: dict[str, Any], email: str | None, settings: Settings) -> dict[str, Any]:
    """What a service job's info holds besides moi's own fields: its service, parameters, first state,
    retention (with the retention hooks its service defines), email, steps, and the directories of its states."""
    secret = [parameter.name for parameter in cls.parameters if parameter.secret]
    shown = ran.masked_params(checked, secret)  # the call carries the values; the info, what a page may show
    fields: dict[str, Any] = {"service": cls.name, "params": shown, "starts_as": first_state(cls)}
    fields["ran"] = ran.service_call(cls.name, checked, secret)
    archive_after = parse_duration(cls.archive_after, "archive_after")
    expire_after = parse_duration(cls.expire_after, "expire_after")
    fields.update(retention_fields(archive_after, expire_after, settings.keep_expired, settings.ttl))
    fields["retention"]["hooks"] = hooks_of(cls)  # what retention runs on an engine: the sweeper never loads cls
    if email:
        fields["email"] = email
    if cls.step_names():
        fields["steps"] = cls.step_names()
    if cls.directories:  # the engine follows these; without any, the directory stays in the jobs root
        fields["directories"] = state_directories.resolved(cls.directories, settings.jobs_root)
    return fields


def _check_address(email: str | None) -> None:
    if email is not None and not _is_address(email):
        raise ValidationFailed("Email address", f"{printable(repr(email))} is not an address like someone@example.org")


def _is_address(email: Any) -> bool:
    """One address on one line: it becomes a mail's To header (CR/LF there would add headers)."""
    return isinstance(email, str) and _EMAIL.fullmatch(email) is not None and text_problem(email, line=True) is None


def _inputs(files: Any) -> dict[str, Any]:
    """Inputs as name -> path or bytes; a stream is read, so the validators and the copy see the same bytes."""
    if files is None:
        return {}
    if isinstance(files, Mapping):
        named = {name: source.read() if hasattr(source, "read") else source for name, source in files.items()}
    elif isinstance(files, Iterable) and not isinstance(files, (str, bytes)):
        files = list(files)
        if not all(isinstance(path, (str, os.PathLike)) for path in files):
            raise InputRefused("files", "every input in a list is a path or a URI (text)")
        named = {}
        for path in files:
            if _name_of(path) in named:
                raise InputRefused(_name_of(path), "two inputs have that name")
            named[_name_of(path)] = os.fspath(path)
    else:
        raise InputRefused("files", "give a list of paths or URIs, or a mapping of names to them")
    for input_name, source in named.items():
        if not isinstance(source, (str, os.PathLike, bytes)):
            raise InputRefused(str(input_name), f"give a path, a URI or bytes, not {type(source).__name__}")
    return named


def _name_of(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    return name_of(text) if is_uri(text) else os.path.basename(text)


def _granted(inputs: dict[str, Any], origin: str) -> dict[str, Any]:
    """Server paths as the policy grants them to ``origin``: for a web user, the bytes of a file inside
    an input root, read once from the descriptor that was checked, so the validators check the bytes
    that are copied (together at most [moi] max_upload, as an upload); as given for this process's user."""
    if origin == LOCAL:
        return inputs
    settings = connections.settings()
    policy = input_policy.of_settings(settings)
    left = settings.max_upload
    granted = {}
    for name, source in inputs.items():
        if isinstance(source, (str, os.PathLike)) and not is_uri(os.fspath(source)):
            source = policy.read_in_roots(name, os.fspath(source), left)
            left -= len(source)
        granted[name] = source
    return granted


def _remote(source: str | bytes | IO[bytes]) -> bool:
    return isinstance(source, str) and is_uri(source)
