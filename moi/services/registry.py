"""Which services this process knows: registered in Python, configured, or loaded from YAML into Redis.

``register(cls)`` in a process; ``[moi] services = pkg.mod:Class, services.yaml``
for every process that reads the configuration (``moi server``, the CLI, the
sweepers); ``moi services load FILE`` stores YAML definitions in Redis
(``moi:services``), where every process sees them. Engines need none of it: a
job's call carries its service (the class, or a YAML service's definition).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from moi.core.config import imported
from moi.core.errors import BadDocument, ServiceDefinitionError, UnknownService
from moi.jobs import connections
from moi.services import documents, unloadable
from moi.services.definition import Service
from moi.services.steps import step_retries
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.services")
_lock = threading.Lock()
_registered: dict[str, type[Service]] = {}
_configured: tuple[str, dict[str, type[Service]]] | None = None  # (the setting it was read from, services)


def register(cls: type[Service]) -> type[Service]:
    """Make a service known in this process (usable as a class decorator); ServiceDefinitionError if unusable."""
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ServiceDefinitionError(f"{cls!r} is not a subclass of moi.services.Service")
    cls.check()
    within_settings(cls)
    with _lock:
        _registered[cls.name] = cls
    return cls


def within_settings(cls: type[Service]) -> None:
    """ServiceDefinitionError for retries (the service's, or a step's) above this configuration's
    ``[moi] max_retries``; ``check`` holds only what holds anywhere, as engines read no settings."""
    most = connections.settings().max_retries
    cls.checked_policy(most)
    for step in getattr(cls, "steps", ()):
        try:
            step_retries(step.name, step.retries, most)
        except ServiceDefinitionError as error:
            raise ServiceDefinitionError(f"service {cls.name!r}: {error} ([moi] max_retries)") from None


def unregister(name: str) -> None:
    with _lock:
        _registered.pop(name, None)


def known(store: Store | None = None) -> dict[str, type[Service]]:
    """Every service by name: YAML ones in Redis, then configured ones, then registered ones (which win)."""
    store = store or connections.store()
    found = stored(store)
    found.update(_from_settings(store))
    with _lock:
        found.update(_registered)
    return dict(sorted(found.items()))


def get(name: str, store: Store | None = None) -> type[Service]:
    with _lock:
        if name in _registered:
            return _registered[name]
    services = known(store)
    if name not in services:
        raise UnknownService(name, list(services))
    return services[name]


def stored(store: Store) -> dict[str, type[Service]]:
    """The YAML services loaded into Redis; a bad definition there is reported and left out."""
    with reaching(store.url):
        raw = store.redis.hgetall(store.keys.services)
    found: dict[str, type[Service]] = {}
    for name, text in raw.items():
        try:
            found[name] = documents.service_from(json.loads(text))
        except (ValueError, ServiceDefinitionError) as error:
            log.warning("%s", BadDocument(f"{store.keys.services} {name}", str(error)))
    return found


def load_into(store: Store, text: str, source: str) -> list[str]:
    """Store the services a YAML text defines (checked first: all or none); their names."""
    services = documents.load(text, source)
    for cls in services:
        within_settings(cls)
    if services:
        with reaching(store.url):
            store.redis.hset(store.keys.services, mapping={c.name: json.dumps(c.definition) for c in services})
    return [cls.name for cls in services]


def dump(store: Store) -> str:
    """Every YAML service this process knows, as one YAML document."""
    services: list[Any] = [cls for cls in known(store).values() if issubclass(cls, documents.StepService)]
    return documents.dump(services)


def _from_settings(store: Store) -> dict[str, type[Service]]:
    global _configured
    setting = connections.settings().services
    with _lock:
        if _configured is not None and _configured[0] == setting:
            return dict(_configured[1])
    found: dict[str, type[Service]] = {}
    for entry in (part.strip() for part in setting.split(",")):
        if entry.endswith((".yaml", ".yml")):
            found.update({cls.name: cls for cls in _read_yaml(entry)})
        elif entry:
            cls = _noted(store, entry)
            found[cls.name] = cls
    with _lock:
        _configured = (setting, found)
    return dict(found)


def _read_yaml(path: str) -> list[type[documents.StepService]]:
    try:
        with open(path, encoding="utf-8") as handle:
            services = documents.load(handle.read(), path)
    except OSError as error:
        raise ServiceDefinitionError(f"services file {path} cannot be read: {error.strerror}") from None
    for cls in services:
        within_settings(cls)
    return services


def _noted(store: Store, entry: str) -> type[Service]:
    """``_imported``, its failure noted among the unloadable services (and its success clearing that note)."""
    try:
        cls = _imported(entry)
    except ServiceDefinitionError as error:
        unloadable.record(store, entry, "", str(error), unloadable.this_process(), unloadable.CONFIGURATION)
        raise
    unloadable.clear(store, entry, unloadable.CONFIGURATION)
    return cls


def _imported(entry: str) -> type[Service]:
    try:
        found = imported(entry)
    except (ImportError, AttributeError, ValueError) as error:
        raise ServiceDefinitionError(
            f"service {entry!r} cannot be imported ({error}); write it as package.module:Class"
        ) from None
    if not (isinstance(found, type) and issubclass(found, Service)):
        raise ServiceDefinitionError(f"service {entry!r} is not a subclass of moi.services.Service")
    found.check()
    within_settings(found)
    return found
