"""A job's time limit and retries as they enter: checked against the settings, with its context's default.

``policy_fields`` gives the info fields ``moi.core.policy`` defines, for every way a job comes in
(``submit``, ``submit_many``, the CLI, the HTTP API, a service job), checked before anything is stored:
``retries`` at most ``[moi] max_retries``; no ``time_limit``: the context's (``[context NAME] time_limit``,
else ``[moi] time_limit``).

``retry_on`` names a failure's exception classes. A built-in one (``OSError``) and moi's own
(``JobTimeLimit``, ``StepFailed``) go bare; any other as ``module.Class``. From a web user (origin WEB)
such a name is taken as written: nothing a web user names is imported in the server. From the library
or the CLI (origin LOCAL, the machine's own user) the module is imported here, and a module that
imports but holds no such exception class is refused (a typo shows at submit, not as a retry that never
comes). A module that does not import here passes, as written: it may exist only where the engines run.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, TypedDict

from moi.core import resources
from moi.core.config import ContextSpec
from moi.core.errors import InvalidValue
from moi.core.info import Info
from moi.core.policy import POLICY_NAMES, Policy, shown
from moi.jobfiles.input_policy import LOCAL
from moi.jobs import connections


class PolicyKeywords(TypedDict, total=False):
    """The keywords of a job's policy, as ``submit_many`` and ``moi.services.submit`` take them (``Policy``'s)."""

    time_limit: str | float | None
    soft_time_limit: str | float | None
    retries: int | None
    retry_on: Any
    backoff: Any
    idempotent: bool | None


def policy_fields(policy: Policy, context: str, origin: str = LOCAL) -> dict[str, Any]:
    """A job's policy as its info holds it: InvalidValue (one line naming the field) for what is refused."""
    settings = connections.settings()
    fields = policy.fields(settings.max_retries, settings.time_limit_of(context))
    _check_backoff(fields.get("backoff"), settings.ttl)
    if origin == LOCAL:
        for name in fields.get("retry_on", ()):
            if isinstance(name, str) and "." in name:
                check_exception_name(name)
    return fields


def resource_fields(spec: ContextSpec, asked: resources.Resources, time_limit: float | None = None) -> dict[str, Any]:
    """A job's ``resources`` field: a scheduler context's defaults with what the job asked (checked) over them;
    a job with a ``time_limit`` and no walltime gets it as its walltime (its scheduler then holds it to it).
    InvalidValue for resources asked of a context of engines, which could not give them."""
    if spec.scheduler is None:
        if asked:
            raise InvalidValue(
                "resources",
                f"context {spec.name!r} runs jobs on its engines, which cannot give {resources.shown(asked)}; "
                "choose a scheduler context ([context NAME] scheduler = slurm ...)",
            )
        return {}
    merged = resources.merged(spec.scheduler.resources, asked)
    if time_limit and "walltime" not in merged:
        merged["walltime"] = resources.walltime_seconds(max(1, math.ceil(time_limit)))
    return {"resources": merged} if merged else {}


def _check_backoff(backoff: list[float] | None, ttl: int) -> None:
    """InvalidValue when a job could wait for its next attempt longer than Redis keeps its info (``ttl``):
    it would be gone before it is due."""
    if backoff is not None and backoff[1] > ttl:
        raise InvalidValue(
            "backoff",
            f"its largest delay, {shown(backoff[1])}, is longer than the {shown(float(ttl))} moi keeps a job (ttl); "
            "give a shorter one, as in 2s,5m",
        )


def check_exception_name(name: str) -> None:
    """InvalidValue when ``module.Class`` names a module that imports here but holds no such exception class."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and (module_name + ".").startswith(error.name + "."):
                continue  # not a module here (or not a module at all): a shorter prefix may be
            return  # the module is here but needs another that is not: it cannot be checked here
        except Exception:  # a module that fails as it imports (its own bug, a missing setting): not checkable here
            return
        for attribute in parts[cut:]:
            found = getattr(found, attribute, None)
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise InvalidValue("retry_on", f"{name!r} names no exception class: {module_name} has no such class")
        return


# As the info holds them: retries as max_attempts.
_AS_ASKED = tuple("max_attempts" if name == "retries" else name for name in POLICY_NAMES)


def as_asked(old: Info) -> dict[str, Any]:
    """The policy fields of a job as it was submitted, for a new job that runs it again (a relaunch): the
    same limits and retries, from attempt 1, without the old one's earlier attempts or next retry."""
    fields = {name: old[name] for name in (*_AS_ASKED, "resources") if old.get(name) is not None}
    if "max_attempts" in fields:
        fields["attempt"] = 1
    return fields
