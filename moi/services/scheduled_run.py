"""A service's ``run`` handed to a batch scheduler (saliweb's shape): ``run`` returns a ``SchedulerJob``.

::

    class Dock(Service):
        name = "dock"

        def run(self):
            return SchedulerJob("dock --in input.pdb --out out.pdb", resources={"cores": 32, "walltime": "12h"},
                                context="hpc")

        def postprocess(self):
            ...  # runs once the scheduler's job has ended well

moi submits the script as a job of the scheduler context (``[context hpc] scheduler = slurm``), a child of the
service job in its tree, in the service job's own directory (the cluster shares it: a scheduler context without
a host). The service job stays Running and its engine waits for the scheduler's job, following its state; once
it ends Success, ``postprocess`` runs (and may ``reschedule_run()``). A failure there fails the service job,
saying why; a cancel of the service job cancels the scheduler's job too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moi.compute.context import by_name
from moi.compute.text_jobs import system_call
from moi.core.errors import ServiceError, StepFailed
from moi.core.info import Info, Status, new_id, new_info
from moi.core.resources import checked, merged
from moi.jobs import cancel as cancelling
from moi.jobs import connections, job_policy
from moi.queue.job_handle import JobHandle
from moi.queue.jobqueue import pack_call
from moi.storage.store import Store

CHILD_NAME = "run on the scheduler"
# A service job submitted to a scheduler context: its hooks run on an engine, and its run()'s command (or the
# SchedulerJob it returns) goes to that context with these resources (moi.services.submission).
RUN_ON = "run_on"


@dataclass(frozen=True)
class SchedulerJob:
    """What a service's ``run`` may return: a shell script for the batch scheduler, its resources, its context."""

    script: str
    resources: Mapping[str, Any] = field(default_factory=dict)
    context: str | None = None  # None: the service job's own context


def run_scheduled(store: Store, info: Info, asked: SchedulerJob) -> dict[str, Any]:
    """Submit ``asked`` as the service job's child and wait for its end; what ``run`` returns then."""
    found = info.get(RUN_ON)
    run_on: dict[str, Any] = found if isinstance(found, dict) else {}
    spec = connections.context_spec(asked.context or run_on.get("context") or str(info.get("context")))
    if spec.scheduler is None:
        raise ServiceError(f"run() returned a SchedulerJob for context {spec.name!r}, which is not a scheduler context")
    child = new_id()
    child_info = new_info(child, CHILD_NAME, "job", store.keys.channel(child), context=spec.name)
    given = merged(checked(run_on.get("resources") or {}), checked(asked.resources))
    child_info.update(job_policy.resource_fields(spec, given))
    child_info.update(cmd_type="system", runs_in=info["id"], priority=info.get("priority") or 0)
    child_info["ttl"] = store.ttl_of(info)
    call = pack_call(by_name(system_call), (asked.script,), {}, None)
    if not connections.queue().enqueue_child(info, spec.name, child_info, call, int(child_info["priority"])):
        raise ServiceError("the service job is gone; its scheduler job was not submitted")
    connections.dispatcher(spec)
    return _waited(store, child)


def _waited(store: Store, child: str) -> dict[str, Any]:
    handle = JobHandle(child, store)
    try:
        while not handle.wait(60):
            pass
    except BaseException:  # the service job cancelled (or its engine stopping): its scheduler job goes too
        cancelling.cancel(child, store)
        raise
    ended = store.get(child)
    if ended["status"] != Status.SUCCESS:
        first = str(ended.get("result") or "").strip().splitlines()[:1]
        raise StepFailed(f"its scheduler job {child} ended {ended['status']}: {first[0] if first else 'no reason'}")
    return {"exit_code": 0, "scheduler_job": child, "scheduler": ended.get("scheduler")}
