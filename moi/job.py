"""Public: submitting jobs and acting on them from Python (``moi.jobs``), under the original moi's names.

    from moi.job import submit, cancel, get_info
    job_id, group_id, handle = submit("local", "alice", "add", None, operator.add, 1, 2)
"""

from __future__ import annotations

from typing import Any

from moi.compute.text_jobs import check_code, function_source, python_exec, system_call
from moi.jobs import connections
from moi.jobs.batch import Batch, submit_many
from moi.jobs.cancel import CancelReport, cancel
from moi.jobs.compat import ctxs
from moi.jobs.submit import (
    context_for,
    create_group,
    get_info,
    pause,
    queue_job,
    relaunch,
    resume,
    submit,
    submit_nouser,
)
from moi.queue.job_handle import JobHandle

__all__ = [
    "Batch",
    "CancelReport",
    "JobHandle",
    "cancel",
    "check_code",
    "context_for",
    "create_group",
    "ctx_default",  # noqa: F822  (read when asked for, by __getattr__)
    "ctxs",
    "function_source",
    "get_info",
    "pause",
    "python_exec",
    "queue_job",
    "relaunch",
    "resume",
    "submit",
    "submit_many",
    "submit_nouser",
    "system_call",
]


def __getattr__(name: str) -> Any:
    if name == "ctx_default":  # read when asked for: the settings may change after import
        return connections.settings().default_context
    raise AttributeError(f"module 'moi.job' has no attribute {name!r}")
