"""A service job on its engine: its hooks in order, each state written as it is entered.

Queued -> Preprocessing -> Running -> Postprocessing -> Success, where a state
whose hook the service does not define is passed over; moi's queue marks the
job with its first state as it takes it. ``skip_run()`` in ``preprocess``
goes straight to Success; ``reschedule_run()`` in ``postprocess`` runs ``run``
again, at most ``reschedule_limit`` times. An exception in any hook fails the
job with its traceback (a failed step or command: with its reason).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, cast

from moi.compute import engine
from moi.core.errors import ServiceError, StepFailed
from moi.core.info import Status
from moi.services import chain, state_directories, steps
from moi.services.definition import Service
from moi.services.documents import service_from
from moi.services.scheduled_run import RUN_ON, SchedulerJob, run_scheduled


def first_state(service: type[Service]) -> str:
    """The state a service job starts in when an engine takes it."""
    return Status.PREPROCESSING if service.overrides("preprocess") else Status.RUNNING


def run_service(service: Any, params: Mapping[str, Any], **moi: Any) -> Any:
    """The job function of every service job (moi gives it ``status_update`` and ``workdir``)."""
    cls = resolved(service)
    status_update: Callable[[str], None] = moi["status_update"]
    directory: str = moi["workdir"]
    store, info = engine.current_job()
    job = cls(info["id"], directory, params)
    state = {"now": first_state(cls)}

    def move(status: str) -> None:
        moved = state_directories.move_for(store, info, status, job.directory)
        if moved != job.directory:
            job.directory = moved
            state_directories.follow(moved)

    def enter(status: str) -> None:
        if state["now"] != status:
            move(status)
            status_update(status)
            state["now"] = status

    try:
        move(state["now"])  # the queue marked its first state as it took it
        if cls.overrides("preprocess"):
            job.preprocess()
        result = None if job.skipped else _run_and_postprocess(job, enter)
        job.complete()
        move(Status.SUCCESS)  # where a completed job is kept
        return result
    finally:
        job.close_log()


def _run_and_postprocess(job: Service, enter: Callable[[str], None]) -> Any:
    for _ in range(job.reschedule_limit + 1):
        enter(Status.RUNNING)
        result = _run(job)
        if type(job).overrides("postprocess"):
            enter(Status.POSTPROCESSING)
            job.rescheduled = False
            job.postprocess()
            if job.rescheduled:
                job.logger.info("postprocess asked to run again")
                continue
        return result
    raise ServiceError(f"reschedule_run() was called more than {job.reschedule_limit} times; giving up")


def _run(job: Service) -> Any:
    """``run``; a command it returns is run in the job directory and must exit 0; a SchedulerJob it returns is
    submitted to its batch scheduler and waited for (``moi.services.scheduled_run``)."""
    result = job.run()
    store, info = engine.current_job()
    if isinstance(result, str) and info.get(RUN_ON):  # submitted to a scheduler context: its command goes there
        result = SchedulerJob(result)
    if isinstance(result, SchedulerJob):
        return run_scheduled(store, info, result)
    if isinstance(result, str) or (isinstance(result, list) and result and all(isinstance(w, str) for w in result)):
        done = chain.run_command(result, job.directory)
        if done.returncode != 0:
            err = os.path.join(steps.STEPS_DIR, "run.stderr")
            raise StepFailed(f"run's command exited with code {done.returncode} (its stderr is in {err})")
        return {"exit_code": 0}
    return result


def carried(cls: type[Service]) -> Any:
    """How a job's call names its service, for the engine to find it again.

    A YAML service travels as its definition; a class by its module and name, or, when
    it was defined in a script run as ``__main__``, by the script's path (loaded on the
    engine under another name, with its imports); an interactive one as the class itself.
    """
    definition = getattr(cls, "definition", None)
    if definition:
        return dict(definition)
    if cls.__module__ != "__main__":
        return ("module", cls.__module__, cls.__qualname__)
    script = getattr(sys.modules["__main__"], "__file__", None)
    if script:
        return ("file", os.path.abspath(script), cls.__qualname__)
    return cls


def resolved(service: Any) -> type[Service]:
    """The class a job's call names its service by (see ``carried``): imported here, as this process's path allows."""
    if isinstance(service, Mapping):  # a YAML service travels as its definition
        return service_from(service)
    if isinstance(service, tuple):
        kind, where, qualname = service
        module = importlib.import_module(where) if kind == "module" else _script(where)
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part)
        return cast(type[Service], found)
    return cast(type[Service], service)


def _script(path: str) -> types.ModuleType:
    """A script loaded as a module (not as ``__main__``, so its main part does not run), once per version."""
    name = f"moi_service_{abs(hash((path, os.stat(path).st_mtime_ns)))}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ServiceError(f"the service's script {path} cannot be loaded here")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
