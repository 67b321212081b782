"""The options of a job's time limit and retries, shared by ``moi submit`` and ``moi run``.

They are checked before anything is stored, as ``moi.jobs.job_policy`` checks them (``[moi] max_retries``,
the context's time limit, a ``module.Class`` in ``--retry-on`` imported here), and for ``moi run`` over the
service's own policy, as ``moi.services.submit`` merges them (``--retry-on`` with the service's retries,
``--soft-time-limit`` under its time limit); a bad value is a usage mistake: one line naming the option,
exit status 2 (``EXIT_USAGE``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from moi.core.errors import InvalidValue
from moi.core.policy import Policy
from moi.jobfiles.input_policy import LOCAL
from moi.jobs.job_policy import policy_fields
from moi.services import registry, submission

_OPTIONS = [
    click.option(
        "--time-limit",
        default=None,
        metavar="DURATION",
        help="End the job, Failed, when it runs longer: 90s, 15m, 2h [default: the context's, if any].",
    ),
    click.option(
        "--soft-time-limit",
        default=None,
        metavar="DURATION",
        help="Warn the job first (JobSoftTimeLimit, which it may catch); shorter than --time-limit.",
    ),
    click.option(
        "--retries",
        type=int,
        default=None,
        metavar="N",
        help="Run a failed job again, up to N more times (at most [moi] max_retries).",
    ),
    click.option(
        "--retry-on",
        multiple=True,
        metavar="NAME_OR_CODE",
        help="Retry only these failures: an exception (OSError, mymodule.Busy, JobTimeLimit) or a shell exit "
        "code; repeatable or comma-separated [default: any failure but a cancel].",
    ),
    click.option(
        "--backoff",
        default=None,
        metavar="FIRST[,LARGEST]",
        help="The delay before a retry, doubled each time, with jitter: 2s, or 2s,5m [default: 1s,10m].",
    ),
    click.option(
        "--idempotent",
        is_flag=True,
        default=None,
        help="The job may run again, as a new attempt, when its engine is lost (within --retries).",
    ),
]


def policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options to a command; it receives them as ``time_limit``, ``retries``, ... keywords."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def policy_of(
    time_limit: str | None,
    soft_time_limit: str | None,
    retries: int | None,
    retry_on: tuple[str, ...],
    backoff: str | None,
    idempotent: bool | None,
) -> Policy:
    """The policy the options ask for, not yet checked: ``--retry-on`` repeated or comma-separated, as one list."""
    names = [part.strip() for given in retry_on for part in given.split(",") if part.strip()]
    return Policy(time_limit, soft_time_limit, retries, names or None, backoff, idempotent or None)


def checked(policy: Policy, context: str, service: str | None = None) -> dict[str, Any]:
    """The policy as ``submit``'s keywords, checked for ``context`` (over the policy of ``service``, a
    service's name, for ``moi run``): click.BadParameter (exit status 2) otherwise."""
    try:
        if service is None:
            policy_fields(policy, context)
        else:  # an unknown service is UnknownService, as the submit would say
            submission.policy_fields(registry.get(service), policy, context, LOCAL)
    except InvalidValue as error:
        raise click.BadParameter(error.why, param_hint=f"'--{error.where.replace('_', '-')}'") from None
    return asdict(policy)
