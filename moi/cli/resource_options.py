"""The options of a job's resources on a batch scheduler, for ``moi submit`` (one job, or ``--each``).

``--cores --memory --walltime --nodes --gpus --partition --account``: what a scheduler context's job asks of
its scheduler (``moi.core.resources``), checked before anything is stored against the context the job goes
to; a bad value, or resources asked of a context of engines, is a usage mistake: one line naming the option,
exit status 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from moi.core import resources
from moi.core.errors import InvalidValue
from moi.jobs import connections, job_policy

_HELP = {
    "cores": ("N", "Cores per task, on a scheduler context (--context with scheduler = slurm, sge or local)."),
    "memory": ("SIZE", "Memory on a scheduler context: 512M, 128G, 1T."),
    "walltime": ("DURATION", "Walltime on a scheduler context: 90m, 12h, 12:00:00, 2-00:00:00."),
    "nodes": ("N", "Nodes on a scheduler context."),
    "gpus": ("N", "GPUs on a scheduler context."),
    "partition": ("NAME", "The scheduler's partition (queue)."),
    "account": ("NAME", "The account (project) the scheduler charges."),
}


def resource_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options to a command; it receives them as ``cores``, ``memory``, ... keywords."""
    for name in reversed(resources.RESOURCE_NAMES):
        metavar, text = _HELP[name]
        command = click.option(f"--{name}", default=None, metavar=metavar, help=text)(command)
    return command


def resources_of(given: dict[str, Any]) -> dict[str, Any]:
    """Pop the resource options from a command's keywords: those given, as ``submit``'s ``resources``."""
    return {name: value for name in resources.RESOURCE_NAMES if (value := given.pop(name, None)) is not None}


def checked_resources(asked: dict[str, Any], context: str) -> dict[str, Any]:
    """``asked`` checked for ``context`` as ``submit`` will check it: click.BadParameter (exit status 2) naming
    the option for a bad value, or for resources asked of a context of engines."""
    try:
        job_policy.resource_fields(connections.context_spec(context), resources.checked(asked))
    except InvalidValue as error:
        name = error.where.removeprefix("resources").lstrip(".") or next(iter(asked), "")  # engines: the first
        raise click.BadParameter(error.why, param_hint=f"'--{name}'") from None
    return asked
