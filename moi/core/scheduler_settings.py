"""Scheduler contexts: a context whose jobs each become one job of a batch scheduler (Slurm, Grid Engine ...).

Configured by a ``[context NAME]`` section that names a ``scheduler`` (see ``SCHEDULER_OPTIONS``)::

    [context hpc]
    # slurm, sge (Grid Engine) or local (a process here, or on the host)
    scheduler = slurm
    # a login node reached over SSH (no host: the commands run here), with host keys checked
    host = login.cluster.example
    user = alice
    key = ~/.ssh/id_ed25519
    known_hosts = ~/.ssh/known_hosts
    # job directories live in <workdir>/<job id> (with a host: there, an absolute path)
    workdir = /scratch/alice/moi
    # the cluster's Python with moi, for Python function jobs
    python = /opt/moi/bin/python
    # default resources (moi.core.resources)
    cores = 1
    partition = short
    # seconds between two status queries (one per context, for all its jobs), and how long a job on a
    # cluster out of reach is kept before it fails
    poll = 5s
    grace = 10m
    # on-end: bring a job's files home when it ends (over SSH); never: leave them there
    fetch = on-end

moi's INI loader keeps ``a = b ; note`` whole as the value: comments go on lines of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moi.core import resources
from moi.core.errors import ConfigError, InvalidValue
from moi.core.policy import seconds_of
from moi.core.redact import printable

SCHEDULER_KINDS = ("slurm", "sge", "local")  # pbs and lsf: not built yet (docs/schedulers.md)
FETCH_CHOICES = ("never", "on-end")
SCHEDULER_OPTIONS = (
    "scheduler",
    "host",
    "user",
    "key",
    "port",
    "known_hosts",
    "workdir",
    "python",
    "poll",
    "grace",
    "fetch",
) + resources.RESOURCE_NAMES
DEFAULT_POLL = 5.0
DEFAULT_GRACE = 600.0


@dataclass(frozen=True)
class SchedulerSpec:
    """Where a scheduler context's jobs go, and how they are watched there."""

    name: str
    kind: str
    host: str | None = None
    user: str | None = None
    key: str | None = None
    port: int = 22
    known_hosts: str | None = None
    workdir: str = ""  # "": moi's own job directories (no host: this machine's filesystem)
    python: str | None = None
    resources: dict[str, int | str] = field(default_factory=dict)
    poll: float = DEFAULT_POLL
    grace: float = DEFAULT_GRACE
    fetch: str = "never"

    @property
    def remote(self) -> bool:
        """Whether the cluster is reached over SSH (and shares no filesystem with moi)."""
        return self.host is not None

    @property
    def where(self) -> str:
        """The cluster for a person: ``alice@login:22`` or ``this machine``."""
        if not self.host:
            return "this machine"
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def scheduler_specs(given: Any) -> dict[str, SchedulerSpec]:
    """``[context NAME]`` sections that name a scheduler (name -> option -> text), checked; ConfigError otherwise."""
    if not isinstance(given, Mapping):
        raise ConfigError("schedulers maps context names to their [context NAME] options")
    return {str(name): scheduler_spec(str(name), options) for name, options in given.items()}


def scheduler_spec(name: str, options: Mapping[str, Any]) -> SchedulerSpec:
    """One scheduler context from its section's options; ConfigError, one line naming the option, otherwise."""
    section = f"[context {printable(name, 40)}]"
    unknown = [option for option in options if option not in SCHEDULER_OPTIONS and option != "time_limit"]
    if unknown:
        raise ConfigError(f"{section} has no option {unknown[0]!r}; the options are {', '.join(SCHEDULER_OPTIONS)}")
    kind = str(options.get("scheduler", "")).strip().lower()
    if kind not in SCHEDULER_KINDS:
        raise ConfigError(f"{section} scheduler must be one of {', '.join(SCHEDULER_KINDS)}, not {kind!r}")
    if options.get("host") and not str(options.get("workdir") or "").strip().startswith("/"):
        raise ConfigError(f"{section} names a host: give it a workdir there, an absolute path for job directories")
    try:
        return SchedulerSpec(
            name,
            kind,
            host=_text(options, "host"),
            user=_text(options, "user"),
            key=_path(options, "key"),
            port=_port(options.get("port", 22), section),
            known_hosts=_path(options, "known_hosts"),
            workdir=(_text(options, "workdir") if options.get("host") else _path(options, "workdir")) or "",
            python=_text(options, "python"),
            resources=resources.checked({key: options[key] for key in resources.RESOURCE_NAMES if key in options}),
            poll=seconds_of(options.get("poll", DEFAULT_POLL), f"{section} poll"),
            grace=seconds_of(options.get("grace", DEFAULT_GRACE), f"{section} grace"),
            fetch=_choice(options.get("fetch", "never"), FETCH_CHOICES, f"{section} fetch"),
        )
    except InvalidValue as error:
        raise ConfigError(f"{section} {error}") from None


def _text(options: Mapping[str, Any], name: str) -> str | None:
    value = str(options.get(name) or "").strip()
    return value or None


def _path(options: Mapping[str, Any], name: str) -> str | None:
    value = _text(options, name)
    return os.path.expanduser(value) if value else None


def _port(value: Any, section: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(f"{section} port must be a port number from 1 to 65535, not {printable(text, 20)!r}")
    return int(text)


def _choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}, not {printable(text, 20)!r}")
    return text
