"""Submitting jobs, and running them on an engine with their state in Redis.

On the submitting side, ``submit`` stores the job as ``Queued`` and hands it
to the cluster. On the engine, ``run_job`` marks it ``Running``, calls the
function with a ``status_update`` callable, and records ``Success`` with the
return value or ``Failed`` with the traceback. The engine needs no moi
configuration: the ``JobSpec`` it receives says which Redis to write to.
"""

from __future__ import annotations

import logging
import subprocess
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import connections
from .context import Context
from .errors import CommandFailed, InvalidCode
from .info import Info, Status, encode_result, is_finished, new_id, new_info, now
from .store import Store, store_for

log = logging.getLogger("moi.job")

NO_USER_GROUP = "no-user"
_CODE_FILENAME = "<moi-cmd>"


@dataclass(frozen=True)
class JobSpec:
    """What an engine needs to record a job's state: sent along with the job."""

    job_id: str
    redis_url: str
    key_prefix: str
    ttl: int

    def store(self) -> Store:
        return store_for(self.redis_url, self.key_prefix, self.ttl)


# submitting --------------------------------------------------------------


def submit(
    ctx: str | Context,
    group: str,
    name: str,
    url: str | None,
    func: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> tuple[str, str, Any]:
    """Run ``func(*args, **kwargs)`` on the cluster as a job under ``group``.

    ``group`` is a user name (its group is created on first use) or a group id.
    Returns ``(job_id, group_id, handle)`` at once; ``handle`` is the
    ipyparallel AsyncResult. The job is stored as Queued and announced
    before this returns.
    """
    context = connections.get_context(ctx)
    view = context.view  # connect first: an unreachable cluster writes nothing
    store = connections.store()
    group_id = store.ensure_group(group)
    job_id = new_id()
    info = new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id, url=url, context=context.name)
    store.add_nodes(group_id, [info])
    spec = JobSpec(job_id, store.url, store.keys.prefix, store.ttl)
    handle = view.apply_async(run_job, spec, func, args, kwargs)
    log.debug("submitted %s to %s", job_id, context.name)
    return job_id, group_id, handle


def submit_nouser(func: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, str, Any]:
    """Submit to the default context, into the no-user group."""
    ctx = connections.settings().default_context
    return submit(ctx, NO_USER_GROUP, NO_USER_GROUP, None, func, *args, **kwargs)


def create_group(name: str, parent: str | None = None) -> str:
    """A new group, top-level or nested under ``parent`` (a user name or group id)."""
    store = connections.store()
    parent_id = store.ensure_group(parent) if parent is not None else None
    return store.create_group(name, parent_id)


def get_info(job_id: str) -> Info:
    return connections.store().get(job_id)


# on the engine -----------------------------------------------------------


def run_job(spec: JobSpec, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The engine side of a job: Running, the call, then Success or Failed."""
    store = spec.store()
    info = store.update(spec.job_id, _start)
    if info["status"] != Status.RUNNING:
        return None  # cancelled (or otherwise finished) before it started
    tracker = _Tracker(store, spec.job_id, info)
    try:
        result = func(*args, status_update=tracker.status_update, **kwargs)
    except Exception:
        tracker.finish(Status.FAILED, traceback.format_exc(), "traceback")
        raise
    value, result_format = encode_result(result)
    tracker.finish(Status.SUCCESS, value, result_format)
    return result


def _start(info: Info) -> Info | None:
    if info["status"] != Status.QUEUED:
        return None
    info.update(status=Status.RUNNING, date_start=now())
    return info


class _Tracker:
    """Keeps the engine's latest copy, so each change is usually one round trip."""

    def __init__(self, store: Store, job_id: str, info: Info) -> None:
        self.store = store
        self.job_id = job_id
        self.info = info

    def status_update(self, text: str) -> None:
        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None  # a late status text never reopens a finished job
            info["status"] = str(text)
            return info

        self.info = self.store.update(self.job_id, change, self.info)

    def finish(self, status: Status, result: Any, result_format: str) -> None:
        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None
            info.update(status=status, result=result, result_format=result_format, date_end=now())
            return info

        self.info = self.store.update(self.job_id, change, self.info)


# what the CLI runs ------------------------------------------------------


def system_call(cmd: str, **kwargs: Any) -> list[Any]:
    """Run a shell command; ``[stdout, stderr, returncode]``, or CommandFailed."""
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0:
        raise CommandFailed(cmd, proc.stdout, proc.stderr, proc.returncode)
    return [proc.stdout, proc.stderr, proc.returncode]


def function_source(code: str) -> str:
    """Code as the body of a function, so ``return x`` sets the result."""
    body = textwrap.indent(textwrap.dedent(code), "    ") or "    pass"
    return f"def moi_cmd(**kwargs):\n{body}\n"


def check_code(code: str) -> None:
    try:
        compile(function_source(code), _CODE_FILENAME, "exec")
    except SyntaxError as error:
        line = (error.lineno or 2) - 1  # the first line is our def
        raise InvalidCode(f"Python code does not compile: {error.msg} (line {line})") from None


def python_exec(code: str, **kwargs: Any) -> Any:
    """Run code given as text (``moi submit --cmd``) as the body of a function."""
    namespace: dict[str, Any] = {}
    exec(compile(function_source(code), _CODE_FILENAME, "exec"), namespace)
    return namespace["moi_cmd"](**kwargs)
