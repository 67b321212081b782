"""What a service is: a name, typed parameters, validators, hooks and retention.

A service in Python is a subclass of ``Service``::

    class Hetatm(Service):
        name = "hetatm"
        parameters = [Parameter("chain", "str", default="A")]
        validators = [validators.pdb]
        archive_after, expire_after = "30d", "90d"
        time_limit, retries, retry_on = "2h", 2, ["OSError"]  # each job's (see moi.core.policy)
        context, resources = "hpc", {"cores": 4, "memory": "16G"}  # where its jobs go, what they ask there

        def run(self):
            return "grep ^HETATM $INPUT/*.pdb > $OUTPUT/hetatm.pdb"

moi makes one instance per job, on the engine, in the job's directory, and
calls its hooks in order (see ``moi.services.lifecycle``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from moi.core import resources as job_resources
from moi.core import values
from moi.core.config import MOST_RETRIES
from moi.core.errors import InvalidValue, ServiceDefinitionError, ValidationFailed
from moi.core.policy import POLICY_NAMES, Policy
from moi.core.resources import Resources
from moi.storage.retention import parse_duration

TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
LOG_NAME = "framework.log"
STATES = ("incoming", "preprocessing", "running", "postprocessing", "completed", "archived")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
POLICY = POLICY_NAMES  # see Service


@dataclass(frozen=True)
class Parameter:
    """A named, typed parameter of a service. ``type``: str, int, float or bool. ``secret``: never shown
    (the job's info, its page and the API show ``***``; a name like ``password`` or ``token`` is secret too)."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""
    secret: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ServiceDefinitionError(f"parameter name {self.name!r} is not a Python identifier")
        if self.type not in TYPES:
            raise ServiceDefinitionError(f"parameter {self.name!r} has type {self.type!r}; use one of {list(TYPES)}")
        if self.default is not None:
            try:
                self.checked(self.default)
            except ValidationFailed:
                raise ServiceDefinitionError(
                    f"parameter {self.name!r} has default {self.default!r}, which is not {self.kind}"
                ) from None

    def checked(self, value: Any) -> Any:
        """``value`` as this parameter's type; a string (from a form or the CLI) is converted. Refused too:
        what JSON and Redis's Lua cannot hold (nan, inf, 10**309, a lone surrogate; see ``moi.core.values``)."""
        problem = values.scalar_problem(value)  # first: float(10**309) would raise OverflowError
        if problem is None:
            value = self._typed(value)
            problem = values.scalar_problem(value)  # "nan" or "1e999" from a form, as a float
        if problem is not None:
            raise ValidationFailed(f"Parameter {self.name!r}", problem)
        return value

    def _typed(self, value: Any) -> Any:
        wanted = TYPES[self.type]
        if isinstance(value, str) and wanted is not str:
            return self._from_text(value)
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if type(value) is not wanted:
            raise self._refused(value)
        return value

    def _from_text(self, text: str) -> Any:
        if self.type == "bool":
            if text.strip().lower() in _TRUE | _FALSE:
                return text.strip().lower() in _TRUE
            raise self._refused(text)
        try:
            return TYPES[self.type](text)
        except ValueError:
            raise self._refused(text) from None

    def _refused(self, value: Any) -> ValidationFailed:
        return ValidationFailed(f"Parameter {self.name!r}", f"{value!r} is not {self.kind}")

    @property
    def kind(self) -> str:
        """The type with its article, for messages: an int, a str."""
        return f"an {self.type}" if self.type == "int" else f"a {self.type}"

    def schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "required": self.required,
            "help": self.help,
            "secret": self.secret,
        }


class Service:
    """A named job type. Subclass it; override ``run`` and any hook you need.

    Hooks run on an engine, in the job's directory (``self.directory``), in the order
    preprocess, run, postprocess, complete. ``run`` returns a shell command (a string, run
    by the shell, or an argv list) to be run there, or does the work itself and returns
    its result. ``archive`` and ``expire`` run later, when retention moves the job on: each as a
    small job of its own on an engine, in the job's directory (see ``moi.services.retention_hooks``).

    ``time_limit``, ``soft_time_limit``, ``retries``, ``retry_on``, ``backoff``, ``idempotent``: each job's,
    as ``moi.jobs.submit.submit`` takes them (see ``moi.core.policy``); a submission may ask for less time
    or other retries. None: the context's time limit, no retries.

    ``context``: the context its jobs go to unless a submission names one (None: the default context);
    ``resources``: what each job asks of a scheduler context's batch scheduler (``cores``, ``memory``, ...; see
    ``moi.core.resources``), a submission's own over them.
    """

    name: ClassVar[str] = ""
    parameters: ClassVar[Sequence[Parameter]] = ()
    validators: ClassVar[Sequence[Callable[[Any], bool] | str]] = ()
    archive_after: ClassVar[str | float] = "never"
    expire_after: ClassVar[str | float] = "never"
    anonymous: ClassVar[bool] = False  # anyone may submit it without an account (see moi.services.anonymous)
    reschedule_limit: ClassVar[int] = 5  # how often postprocess may call reschedule_run() for one job
    directories: ClassVar[Mapping[str, str]] = {}  # state -> directory root (see moi.services.state_directories)
    time_limit: ClassVar[str | float | None] = None
    soft_time_limit: ClassVar[str | float | None] = None
    retries: ClassVar[int | None] = None
    retry_on: ClassVar[Sequence[str | int | type[BaseException]] | None] = None
    backoff: ClassVar[Any] = None
    idempotent: ClassVar[bool | None] = None
    context: ClassVar[str | None] = None
    resources: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, job_id: str, directory: str, params: Mapping[str, Any]) -> None:
        self.job_id = job_id
        self.directory = directory
        self.params = dict(params)
        self.skipped = False
        self.rescheduled = False
        self._logger: logging.Logger | None = None
        self._log_handler: logging.Handler | None = None

    # hooks, each a no-op unless overridden ----------------------------------------------

    def preprocess(self) -> None:
        """Before ``run``; may call ``skip_run()``."""

    def run(self) -> Any:
        """The work: a shell command to run in the job directory, or the result itself."""
        raise NotImplementedError(f"service {self.name!r} defines no run()")

    def postprocess(self) -> None:
        """After ``run``; may call ``reschedule_run()`` to run it again."""

    def complete(self) -> None:
        """Last, once the job has succeeded."""

    def archive(self) -> None:
        """When retention archives the job (``archive_after`` after its success), in its archived directory."""

    def expire(self) -> None:
        """When retention expires it (``expire_after`` after archiving); moi removes its directory after this."""

    # what hooks may call ------------------------------------------------------------------

    def skip_run(self) -> None:
        """From ``preprocess``: go straight to Success without ``run``."""
        self.skipped = True

    def reschedule_run(self) -> None:
        """From ``postprocess``: run ``run`` (and ``postprocess``) again, at most ``reschedule_limit`` times."""
        self.rescheduled = True

    @property
    def logger(self) -> logging.Logger:
        """A logger writing to ``framework.log`` in the job directory, created when first written."""
        if self._logger is None:
            self._logger = logging.getLogger(f"moi.services.job.{self.job_id}")
            self._logger.propagate = False
            self._logger.setLevel(logging.INFO)
            handler = logging.FileHandler(os.path.join(self.directory, LOG_NAME), delay=True, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self._logger.addHandler(handler)
            self._log_handler = handler
        return self._logger

    def close_log(self) -> None:
        if self._logger is not None and self._log_handler is not None:
            self._logger.removeHandler(self._log_handler)
            self._log_handler.close()
            self._logger = None

    # about the class --------------------------------------------------------------------

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """Whether this service defines ``hook`` itself (an inherited no-op is skipped, state and all)."""
        return getattr(cls, hook) is not getattr(Service, hook)

    @classmethod
    def check(cls) -> None:
        """ServiceDefinitionError for a class moi cannot run, said at registration."""
        if not isinstance(cls.name, str) or not cls.name or not cls.name.replace("-", "_").isidentifier():
            raise ServiceDefinitionError(f"service {cls.__qualname__} needs a name of letters, digits, _ and -")
        for parameter in cls.parameters:
            if not isinstance(parameter, Parameter):
                raise ServiceDefinitionError(f"service {cls.name!r}: {parameter!r} is not a Parameter")
        archive = parse_duration(cls.archive_after, f"service {cls.name!r} archive_after")
        expire = parse_duration(cls.expire_after, f"service {cls.name!r} expire_after")
        if cls.anonymous and (archive is None or expire is None):  # anyone's uploads would stay on disk forever
            raise ServiceDefinitionError(f"service {cls.name!r} is anonymous: it needs archive_after and expire_after")
        unknown = set(cls.directories) - set(STATES)
        if unknown:
            raise ServiceDefinitionError(f"service {cls.name!r}: no state {sorted(unknown)}; states are {STATES}")
        cls.checked_policy(MOST_RETRIES)
        cls.checked_resources()
        if cls.context is not None and not (isinstance(cls.context, str) and cls.context):
            raise ServiceDefinitionError(f"service {cls.name!r}: context is the name of a configured context")

    @classmethod
    def policy(cls) -> Policy:
        """Its jobs' time limit and retries as the class gives them (not yet checked)."""
        return Policy(**{name: getattr(cls, name) for name in POLICY})

    @classmethod
    def checked_policy(cls, max_retries: int) -> dict[str, Any]:
        """Its jobs' policy fields; ServiceDefinitionError (one line) for a value ``moi.core.policy`` refuses."""
        try:
            return cls.policy().fields(max_retries)
        except InvalidValue as error:
            raise ServiceDefinitionError(f"service {cls.name!r}: {error}") from None

    @classmethod
    def checked_resources(cls) -> Resources:
        """Its jobs' resources, checked; ServiceDefinitionError (one line) for a value ``moi.core.resources``
        refuses."""
        try:
            return job_resources.checked(cls.resources)
        except InvalidValue as error:
            raise ServiceDefinitionError(f"service {cls.name!r}: {error}") from None

    @classmethod
    def checked_params(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters of a job: typed, defaults filled in; ValidationFailed for a bad or missing one."""
        known = {parameter.name: parameter for parameter in cls.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValidationFailed(f"Parameter {unknown[0]!r}", f"service {cls.name!r} takes {sorted(known) or 'none'}")
        params = {}
        for name, parameter in known.items():
            if name in given:
                params[name] = parameter.checked(given[name])
            elif parameter.required:
                raise ValidationFailed(f"Parameter {name!r}", "it is required")
            else:
                params[name] = parameter.default
        return params

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """What ``moi services`` and the API show of it."""
        return {
            "name": cls.name,
            "parameters": [p.schema() for p in cls.parameters],
            "steps": cls.step_names(),
            "archive_after": str(cls.archive_after),
            "expire_after": str(cls.expire_after),
            "policy": cls.described_policy(),
            "anonymous": cls.anonymous,
            **({"context": cls.context} if cls.context else {}),
            **({"resources": cls.checked_resources()} if cls.resources else {}),
        }

    @classmethod
    def described_policy(cls) -> dict[str, Any]:
        """Its jobs' time limit and retries as asked (seconds, names, codes): only what it sets."""
        fields = cls.checked_policy(MOST_RETRIES)
        if "max_attempts" in fields:
            fields["retries"] = fields.pop("max_attempts") - 1
        fields.pop("attempt", None)
        return fields

    @classmethod
    def step_names(cls) -> list[str]:
        return []
