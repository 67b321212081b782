"""A scheduler job's files in its job directory: the script the scheduler runs, and what the job leaves.

In ``<directory>/.moi/``:

- ``job.sh``: the script handed to the scheduler: its directives, then the job; it writes ``exit`` last;
- ``command.sh``: a shell job's command, as the user gave it (run by ``/bin/sh``, never pasted into the script);
- ``call``: a Python job's packed call, which the cluster's ``python -m moi.compute.schedulers.node`` runs
  (a batch item's: its batch's call, and ``item``, its own arguments);
- ``exit``: the job's exit code, written as it ends (its absence: the scheduler ended it);
- ``outcome.json``: a Python job's return value or traceback (``moi.compute.schedulers.node``);
- ``status``: a Python job's latest ``status_update`` text.

The job's output (stdout and stderr) goes to ``<directory>/framework.log``, the log its page follows.
"""

from __future__ import annotations

import shlex

STATE_DIR = ".moi"
SCRIPT, COMMAND, CALL, ITEM, EXIT = "job.sh", "command.sh", "call", "item", "exit"
OUTCOME, STATUS = "outcome.json", "status"
LOG = "framework.log"


def path(directory: str, name: str) -> str:
    """A file of moi's in the job's directory (``name``: one of the names above)."""
    return f"{directory}/{STATE_DIR}/{name}"


def job_name(job_id: str) -> str:
    """The job's name on the scheduler: ``moi-`` and its id, so that a person can tell it in ``squeue``."""
    return f"moi-{job_id}"


def script(directives: list[str], directory: str, python: str | None) -> str:
    """The script the scheduler runs: into the job's directory, the job, then its exit code into ``exit``."""
    if python is None:
        run = f"/bin/sh {shlex.quote(path(directory, COMMAND))}"
    else:
        run = f"{shlex.quote(python)} -m moi.compute.schedulers.node {shlex.quote(directory)}"
    exit_file = shlex.quote(path(directory, EXIT))
    lines = [
        "#!/bin/sh",
        *directives,
        f"cd {shlex.quote(directory)} || exit 97",
        run,
        "code=$?",
        f'rm -f {exit_file}.tmp; (set -C; echo "$code" > {exit_file}.tmp) && mv -f {exit_file}.tmp {exit_file}',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"
