"""Public: a job's files (``moi.jobfiles``): its directory, inputs, outputs, and ``delete``. ``list`` and ``open``
read them wherever they are, here or on a scheduler context's cluster over SSH; ``fetch`` brings those home."""

from __future__ import annotations

from moi.jobfiles.directory import current_directory, directory_of
from moi.jobfiles.inputs import COPY_CHUNK, NAME_MAX, Inputs, Source, prepare, submit_policy
from moi.jobfiles.on_engine import bring_in, cpu_share, held, job_environment, send_out, unseen
from moi.jobfiles.reading import LIST_PATH_MAX, Entry, summary
from moi.jobfiles.removal import SWEEP_GRACE, remove_directories, remove_directory, sweep
from moi.jobs.cancel import (
    delete,
)
from moi.jobs.job_files import fetch, list, open

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
    "fetch",
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
