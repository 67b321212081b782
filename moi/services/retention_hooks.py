"""A service job's ``archive()`` and ``expire()`` as jobs of their own, run where its other hooks ran.

The sweeper (``moi.services.sweeper``) moves a service job on from what its info says, without
loading its service; when the job's service defines the hook (``retention.hooks`` in its info,
recorded at submit), ``queue_hook`` queues a small *hook job* as a child of the service job, named
after the hook, in the job's context: it shows among the job's steps on its page. Its call carries
the service job's origin, so an engine runs it on the submitter's host, with the submitter's
directory first on the path (it imports what the job imported: a user's own ``mymodule.py``), in
the job's directory. There ``run_hook`` loads the service from the service job's own call, and calls
the hook.

- The hook job carries no retention of its own (it is never archived) and lives as long as its
  service job (its ``ttl``); it is moi's upkeep, so no limit refuses it and it does not count among
  its owner's jobs (see ``Queue.enqueue_child``), though a pause of its owner or context holds it as
  any job. Only the sweeper whose move landed queues it, so each hook runs once per move.
- It has a time limit, so a hook that hangs never holds an engine for ever: its context's
  (``[context NAME] time_limit``, else ``[moi] time_limit``), else ``HOOK_TIME_LIMIT``.
- An expire hook removes the job's directory after the hook, whatever the hook did (past its time
  limit too: the limit's ``JobTimeLimit`` ends the hook, then the removal runs, shielded).
- A hook that fails, or a service that cannot be loaded on the engine, fails the hook job with its
  traceback, and notes it on the service job (``hook_errors``: hook -> one line); a service that
  cannot be loaded is also noted in ``moi.services.unloadable``. The service job's move stands.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from moi.compute import engine
from moi.compute.context import by_name
from moi.core.errors import MoiError, ServiceError
from moi.core.info import Info, new_id, new_info
from moi.core.policy import Policy
from moi.jobfiles.removal import remove_directory
from moi.jobs.job_policy import policy_fields
from moi.queue.jobqueue import Queue, origin_of, pack_call, unpack_call
from moi.services import unloadable
from moi.services.definition import Service
from moi.services.lifecycle import resolved
from moi.storage.loops import one_line
from moi.storage.store import Store

log = logging.getLogger("moi.services.sweeper")

HOOKS = ("archive", "expire")
HOOK_FIELD = "retention_hook"  # on a hook job: which hook it runs
ERRORS_FIELD = "hook_errors"  # on a service job: hook -> why it did not run, or how it failed
HOOK_TIME_LIMIT = 3600.0  # seconds a hook job may run when its context names no time limit


def hooks_of(cls: type[Service]) -> list[str]:
    """The retention hooks a service defines itself: what its jobs record at submit."""
    return [hook for hook in HOOKS if cls.overrides(hook)]


def has_hook(info: Info, hook: str) -> bool:
    """Whether a service job's hook is to run: as recorded at submit; a job submitted before moi
    recorded them may have it (the engine, which loads the service, looks)."""
    hooks = (info.get("retention") or {}).get("hooks")
    return not isinstance(hooks, list) or hook in hooks


# the sweeper's side -----------------------------------------------------------------------------


def queue_hook(store: Store, info: Info, hook: str, directory: str) -> str | None:
    """Queue ``hook`` of service job ``info`` (just moved on by this sweeper) as its child job; the hook
    job's id, or None when it cannot run (noted on the job: its call is no longer kept; or it is gone)."""
    jobs = Queue(store)
    call = jobs.call_of(info["id"])
    origin = origin_of(call) if call is not None else None
    if not isinstance(origin, tuple) or len(origin) < 2:
        note(store, info["id"], hook, f"{hook}() not run: the job's call, which names its service, is no longer kept")
        return None
    here = directory if os.path.isdir(directory) else ""  # else it runs where the job was submitted from
    hook_id = new_id()
    hook_job = new_info(hook_id, hook, "job", store.keys.channel(hook_id), context=info.get("context"))
    hook_job.update({HOOK_FIELD: hook, "priority": info.get("priority") or 0, "ttl": store.ttl_of(info)})
    hook_job["time_limit"] = hook_time_limit(str(info.get("context")))
    packed = pack_call(by_name(run_hook), (info["id"], hook, directory), {}, (origin[0], origin[1], here, {}))
    if not jobs.enqueue_child(info, str(info.get("context")), hook_job, packed, int(hook_job["priority"])):
        return None
    return hook_id


def hook_time_limit(context: str) -> float:
    """Seconds a hook job of ``context`` may run: the context's time limit, else ``HOOK_TIME_LIMIT``."""
    limit = policy_fields(Policy(), context).get("time_limit")
    return float(limit) if limit is not None else HOOK_TIME_LIMIT


def note(store: Store, job_id: str, hook: str, line: str) -> None:
    """``line`` noted on the service job under ``hook_errors``; a job gone meanwhile, or Redis, only logged."""

    def change(current: Info) -> Info:
        current[ERRORS_FIELD] = {**(current.get(ERRORS_FIELD) or {}), hook: line}
        return current

    log.warning("job %s: %s", job_id, line)
    try:
        store.update(job_id, change)
    except MoiError as error:  # gone meanwhile (UnknownId), or Redis
        log.warning("job %s: %s not noted on it: %s", job_id, hook, error)


# the engine's side ------------------------------------------------------------------------------


def run_hook(job_id: str, hook: str, directory: str, **moi: Any) -> str:
    """The job function of a hook job: ``hook`` of service job ``job_id``, in its ``directory``;
    after an expire hook, whatever it did, the directory is removed."""
    store, _ = engine.current_job()
    try:
        info = store.get(job_id)
        cls, params = _loaded(store, info, hook)
        if not cls.overrides(hook):
            return f"service {cls.name!r} has no {hook}()"
        _called(store, cls, info, directory, hook, params)
        return f"{hook}() ran"
    finally:
        if hook == "expire":
            with engine.shielded():  # a cancel, or a second interrupt, must not stop the removal halfway
                remove_directory(directory)


def _loaded(store: Store, info: Info, hook: str) -> tuple[type[Service], Mapping[str, Any]]:
    """The service of a job, loaded from its call as its own engine loaded it, and the parameters that
    call carries (the real ones: the info's are masked where secret); ServiceError (noted on the job and
    among the unloadable services) when it cannot be loaded here."""
    name = str(info.get("service") or "")
    carried: Any = None
    params: Any = None
    where = unloadable.on_engine(engine.engine_label())
    try:
        call = Queue(store).call_of(info["id"])
        if call is None:
            raise ServiceError("the job's call, which names its service, is no longer kept")
        carried, params = unpack_call(call)[1][:2]  # run_service(service, params)
        cls = resolved(carried)
    except Exception as error:  # an ImportError, a SyntaxError, a class gone from its module: said, not raised
        why = one_line(error)
        unloadable.record(store, unloadable.entry_of(carried, name), name, why, where, unloadable.ENGINE)
        note(store, info["id"], hook, f"{hook}() not run: service {name!r} cannot be loaded on {where}: {why}")
        raise ServiceError(f"service {name!r} cannot be loaded on {where}: {why}") from error
    unloadable.clear(store, unloadable.entry_of(carried, name), unloadable.ENGINE)
    return cls, params if isinstance(params, Mapping) else {}


def _called(  # noqa: PLR0913
    store: Store, cls: type[Service], info: Info, directory: str, hook: str, params: Mapping[str, Any]
) -> None:
    """The hook itself, on an instance of the service as its other hooks had (with the call's parameters,
    never the info's masked ones); a failure is noted and raised."""
    service = cls(info["id"], directory, params)
    try:
        getattr(service, hook)()
    except Exception as error:
        where = unloadable.on_engine(engine.engine_label())
        note(store, info["id"], hook, f"{hook}() failed on {where}: {one_line(error)}")
        raise
    finally:
        service.close_log()
