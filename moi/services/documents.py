"""Services defined in YAML: the command-line kind, with no Python.

    services:
      - name: wordcount
        parameters:
          - {name: min_length, type: int, default: 1}
        validators: [non_empty, utf8_text]
        archive_after: 30d
        expire_after: 90d
        time_limit: 1h                 # a job's, as moi.core.policy: time_limit, soft_time_limit,
        retries: 2                     # retries, retry_on, backoff, idempotent
        context: hpc                   # where its jobs go (a submission may name another)
        resources: {cores: 4, memory: 16G, walltime: 2h}  # each job's, on a scheduler context
        steps:
          - name: words
            run: tr -s ' ' '\\n' < $INPUT/text.txt > $OUTPUT/words.txt
            outputs: [output/words.txt]
          - name: count
            run: awk 'length >= {min_length}' $OUTPUT/words.txt | wc -l > $OUTPUT/count.txt
            time_limit: 5m             # a step's: time_limit and retries (see moi.services.steps)
            retries: 1

Read with PyYAML's ``safe_load`` (no Python objects can be built from a document)
and written with ``safe_dump``; ``dump(load(text))`` gives the same definitions back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

import yaml

from moi.core.errors import ServiceDefinitionError
from moi.services.chain import Chain
from moi.services.definition import POLICY, Parameter, Service
from moi.services.steps import Step, check_chain, step_document, step_from

_KEYS = {"name", "parameters", "validators", "steps", "archive_after", "expire_after", "reschedule_limit"}
_KEYS |= {"anonymous", "context", "resources", *POLICY}


class StepService(Service):
    """A service whose ``run`` is a chain of command-line steps (see ``moi.services.steps``)."""

    steps: ClassVar[tuple[Step, ...]] = ()
    definition: ClassVar[dict[str, Any]] = {}

    def run(self) -> Any:
        return Chain(self.steps, self.params, self.directory).run()

    @classmethod
    def step_names(cls) -> list[str]:
        return [step.name for step in cls.steps]

    @classmethod
    def check(cls) -> None:
        """As ``Service.check``, and its chain too: a step subclassed in Python is checked at registration."""
        super().check()
        check_chain(cls.steps)


def service_from(document: Mapping[str, Any]) -> type[StepService]:
    """A service class from one YAML definition; ServiceDefinitionError saying what is wrong."""
    if not isinstance(document, Mapping) or not isinstance(document.get("name"), str):
        raise ServiceDefinitionError("a service definition is a mapping with a 'name'")
    name = document["name"]
    unknown = set(document) - _KEYS
    if unknown:
        raise ServiceDefinitionError(f"service {name!r} has unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    try:
        parameters = tuple(Parameter(**dict(p)) for p in document.get("parameters") or ())
    except TypeError as error:
        raise ServiceDefinitionError(f"service {name!r}: a parameter has {error}") from None
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ServiceDefinitionError(f"service {name!r} needs a list of steps")
    chain = tuple(step_from(step, index) for index, step in enumerate(raw_steps))
    check_chain(chain)
    attributes: dict[str, Any] = {
        "name": name,
        "parameters": parameters,
        "validators": tuple(str(v) for v in document.get("validators") or ()),
        "steps": chain,
        "archive_after": document.get("archive_after", "never"),
        "expire_after": document.get("expire_after", "never"),
        "reschedule_limit": int(document.get("reschedule_limit", Service.reschedule_limit)),
        "anonymous": _anonymous(name, document.get("anonymous", False)),
        **{key: document[key] for key in (*POLICY, "context") if document.get(key) is not None},
        "resources": _resources(name, document.get("resources")),
    }
    cls = cast(type[StepService], type(f"Service_{name}", (StepService,), attributes))
    cls.definition = definition_of(cls)
    cls.check()
    return cls


def definition_of(cls: type[StepService]) -> dict[str, Any]:
    """The YAML definition of a step service, normalised: what ``dump`` writes and engines receive."""
    document: dict[str, Any] = {"name": cls.name}
    if cls.parameters:
        document["parameters"] = [_parameter_document(p) for p in cls.parameters]
    if cls.validators:
        document["validators"] = list(cls.validators)
    for key in ("archive_after", "expire_after"):
        if str(getattr(cls, key)) != "never":
            document[key] = getattr(cls, key)
    if cls.reschedule_limit != Service.reschedule_limit:
        document["reschedule_limit"] = cls.reschedule_limit
    if cls.anonymous:
        document["anonymous"] = True
    document.update({key: getattr(cls, key) for key in (*POLICY, "context") if getattr(cls, key) is not None})
    if cls.resources:
        document["resources"] = dict(cls.resources)
    document["steps"] = [step_document(step) for step in cls.steps]
    return document


def _resources(name: str, value: Any) -> dict[str, Any]:
    """``resources: {cores: 4, memory: 16G}``: a mapping (checked with the class, ``Service.check``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ServiceDefinitionError(f"service {name!r}: resources is a mapping, as {{cores: 4, memory: 16G}}")
    return dict(value)


def _anonymous(name: str, value: Any) -> bool:
    """``anonymous: true``: anyone may submit the service's jobs without an account; only a YAML boolean."""
    if not isinstance(value, bool):
        raise ServiceDefinitionError(f"service {name!r}: anonymous is true or false, not {value!r}")
    return value


def _parameter_document(parameter: Parameter) -> dict[str, Any]:
    document: dict[str, Any] = {"name": parameter.name, "type": parameter.type}
    if parameter.default is not None:
        document["default"] = parameter.default
    if parameter.required:
        document["required"] = True
    if parameter.help:
        document["help"] = parameter.help
    return document


def load(text: str, source: str = "the YAML") -> list[type[StepService]]:
    """The services a YAML text defines: ``services: [...]``, a list, or one mapping."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ServiceDefinitionError(f"{source} is not YAML: {str(error).splitlines()[0]}") from None
    if isinstance(document, Mapping) and "services" in document:
        document = document["services"]
    definitions = document if isinstance(document, list) else [document]
    services = []
    for definition in definitions:
        try:
            services.append(service_from(definition))
        except ServiceDefinitionError as error:
            raise ServiceDefinitionError(f"{source}: {error}") from None
    return services


def dump(services: list[type[StepService]]) -> str:
    return str(yaml.safe_dump({"services": [cls.definition for cls in services]}, sort_keys=False, allow_unicode=True))
