"""Public: a job's files (``moi.jobfiles.directory``): its directory, inputs, outputs, and ``delete``."""

from __future__ import annotations

from moi.jobfiles.directory import (
    COPY_CHUNK,
    LIST_PATH_MAX,
    NAME_MAX,
    SWEEP_GRACE,
    Entry,
    Inputs,
    Source,
    bring_in,
    cpu_share,
    current_directory,
    directory_of,
    held,
    job_environment,
    list,
    open,
    prepare,
    remove_directories,
    remove_directory,
    send_out,
    submit_policy,
    summary,
    sweep,
    unseen,
)
from moi.jobs.cancel import (
    delete,
)

__all__ = [
    "COPY_CHUNK",
    "Entry",
    "Inputs",
    "LIST_PATH_MAX",
    "NAME_MAX",
    "SWEEP_GRACE",
    "Source",
    "bring_in",
    "cpu_share",
    "current_directory",
    "delete",
    "directory_of",
    "held",
    "job_environment",
    "list",
    "open",
    "prepare",
    "remove_directories",
    "remove_directory",
    "send_out",
    "submit_policy",
    "summary",
    "sweep",
    "unseen",
]
