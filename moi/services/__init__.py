"""Services: named job types that a scientific web application publishes.

A service has typed parameters, validators that check its inputs before anything
is queued, hooks that run on an engine in the job's directory (``preprocess``,
``run``, ``postprocess``, ``complete``; ``archive`` and ``expire`` later, by
retention), and mails its submitter when it ends. Define one in Python
(subclass ``Service``) or in YAML (a chain of command-line steps, see
``moi.services.documents``); submit with ``moi.services.submit``, ``moi run`` or the page.

The layer may import the layers below it (jobs, compute, jobfiles, queue, storage, core). This
package is also a public path, so it only re-exports. Its modules:

    ``definition``         what a service is: a name, typed parameters, validators, hooks and retention
    ``validators``         plain functions that look at a submitted file and say whether it is fine
    ``documents``          services defined in YAML: the command-line kind, with no Python
    ``steps``              a chain of command-line steps: the ``run`` of a service defined in YAML
    ``chain``              a chain of steps on its engine: each step a child job, with its time limit and retries
    ``registry``           which services this process knows: registered, configured, or loaded into Redis
    ``submission``         submitting a service job: parameters checked, inputs validated, the job queued
    ``lifecycle``          a service job on its engine: its hooks in order, each state written as entered
    ``state_directories``  per-state directories: a job's directory kept under a root per state
    ``resubmission``       acting on a service job after it was submitted: a failed one sent back to the start
    ``sweeper``            retention: finished service jobs archived, then expired, without loading their service
    ``retention_hooks``    a job's archive() and expire() as hook jobs, on an engine, in its directory
    ``unloadable``         services that could not be loaded: why, where and when, for status, page and metrics
    ``mail``               mail of service jobs: to the submitter when one ends, to the admin on a failure
    ``anonymous``          jobs without an account: the reserved owner, the secret link, the per-address count
    ``scheduled_run``      a run() that returns a SchedulerJob: its script submitted to a batch scheduler, waited for
"""

from __future__ import annotations

from moi.services import validators
from moi.services.definition import Parameter, Service
from moi.services.documents import StepService
from moi.services.registry import dump, get, known, load_into, register, unregister
from moi.services.scheduled_run import SchedulerJob
from moi.services.submission import submit

__all__ = [
    "Parameter",
    "SchedulerJob",
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
