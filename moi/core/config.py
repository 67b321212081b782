"""Settings: built once, lazily, from defaults, an INI file, the environment and
``moi.configure``; later sources win. Reading settings opens no connection.

INI file (named by ``MOI_CONFIG_FP``)::

    [redis]
    url = redis://127.0.0.1:6379/0     ; or host / port / password / db; rediss:// for TLS
    ; or sentinels = h1:26379, h2:26379 with service = mymaster (and password, db)
    [ipython]
    context = default=/path/to/ipcontroller-client.json, big=slurm:cluster1
    default = default
    [moi]
    key_prefix = myapp:
    ttl = 1209600
    max_retries = 10
    time_limit = 2h
    [context big]
    time_limit = 12h

A context entry is ``NAME`` (an IPython profile of that name), or
``NAME=TARGET`` where TARGET is a profile, ``profile:cluster_id`` or the path
of an ``ipcontroller-client.json`` connection file. ``[moi] time_limit`` is the time limit
of a job that names none, in every context; a ``[context NAME]`` section's, in that context.
Which option goes to which setting: ``moi.core.config_sources``.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import Any

from moi.core import values
from moi.core.config_sources import from_environment, from_ini
from moi.core.errors import ConfigError, InvalidValue
from moi.core.files_settings import parse_allow, split_list, under
from moi.core.lua import MAX_PRIORITY
from moi.core.oidc_settings import check_oidc
from moi.core.policy import DEFAULT_MAX_RETRIES, seconds_of
from moi.core.scheduler_settings import SchedulerSpec, scheduler_specs

TWO_WEEKS = 14 * 24 * 3600
MOST_RETRIES = 1000  # [moi] max_retries at most: more is surely a mistake


@dataclass(frozen=True)
class ContextSpec:
    """Where one ipyparallel cluster is (``None`` everywhere: the embedded one), or a scheduler context's spec."""

    name: str
    profile: str | None = None
    cluster_id: str | None = None
    url_file: str | None = None
    scheduler: SchedulerSpec | None = None

    @classmethod
    def parse(cls, entry: str) -> ContextSpec:
        name, sep, target = (part.strip() for part in entry.partition("="))
        if not name:
            raise ConfigError(f"Empty context name in {entry!r}; write NAME or NAME=TARGET")
        target = target if sep else name
        if target.endswith(".json"):
            return cls(name, url_file=os.path.expanduser(target))
        profile, _, cluster_id = target.partition(":")
        return cls(name, profile=profile or None, cluster_id=cluster_id or None)

    def connection_file(self) -> str | None:
        """The controller's client connection file: the one named, or the profile's (None: the embedded runtime's)."""
        if self.url_file or not self.profile:
            return self.url_file
        from IPython.paths import get_ipython_dir  # imported here: IPython is slow, and only probes need it

        name = f"ipcontroller-{self.cluster_id}-client.json" if self.cluster_id else "ipcontroller-client.json"
        return os.path.join(get_ipython_dir(), f"profile_{self.profile}", "security", name)


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None  # None: the embedded runtime's Redis
    contexts: dict[str, ContextSpec] = field(default_factory=dict)  # empty: the runtime's cluster
    default_context: str = "default"
    key_prefix: str = ""
    ttl: int = TWO_WEEKS
    cluster_timeout: float = 10.0
    state_dir: str = ""
    engines: int = 0  # engines of the embedded cluster; 0 means the CPU count
    # Task scheduler of the embedded cluster: NAME or NAME+hwm=N (see README, Performance).
    scheduler: str = "leastload"
    cookie_secret: str = ""  # empty: `moi server` keeps a generated one in state_dir
    # [server] logins: the login methods of `moi server`, comma-separated (LOGIN_METHODS); dev: any name, no password
    logins: str = "dev"
    session_hours: float = 12.0  # [server] session_hours: how long a login lasts (its cookie and its session)
    # The header method: the user a trusted proxy names in this header, from these addresses or networks only.
    # trusted_proxies also says whose X-Forwarded-For names the client (the throttle's address), with any method.
    login_header: str = "X-Remote-User"
    trusted_proxies: str = ""
    # The oidc method (moi.web.login_oidc): an OpenID provider, this server's client there, and the claims read.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = field(default="", repr=False)
    oidc_name: str = "OpenID Connect"  # the login page's button: "Log in with <oidc_name>"
    oidc_scopes: str = "openid profile email"
    oidc_username_claim: str = "preferred_username"  # the claim that names the login (or email, sub, ...)
    oidc_admin_claim: str = ""  # a claim listing the user's groups (groups); with oidc_admin_group, makes admins
    oidc_admin_group: str = ""
    proxy_secret: str = field(default="", repr=False)  # set: the proxy must also send it in X-Moi-Proxy-Secret
    secure_cookies: str = "auto"  # on, off, auto: on unless `moi server` listens on loopback
    pam_service: str = "login"  # the pam method's PAM service (/etc/pam.d/NAME)
    # Per-user limits on unfinished jobs (0: none). From hog_size on, a user's next jobs go no higher
    # than low (-1), below every other user's normal ones; at hard_limit their next submit is refused.
    hog_size: int = 0
    hard_limit: int = 0
    # The highest priority a user may give over the API (a higher one is refused, 422); admins, and the
    # library and CLI run as the machine's user, may use any. 0: nobody jumps another user's normal jobs.
    max_user_priority: int = 0
    chooser: str = ""  # "pkg.mod:func": picks the context of a job submitted with ctx=None
    # Where job directories are made (one per job with files); empty: <state_dir>/jobs. With
    # engines on other hosts it must be a filesystem they all see at the same path.
    jobs_dir: str = ""
    # Services (moi.services) known everywhere: "pkg.mod:Class" and YAML files, comma-separated.
    services: str = ""
    keep_expired: int = 30 * 86400  # seconds an Expired service job's info object is kept
    # Mail of service jobs ([mail] section): none is sent while smtp_host is empty.
    smtp_host: str = ""
    smtp_port: int = 0  # 0: 25, or 465 with smtp_tls = ssl
    smtp_tls: str = "off"  # off, starttls or ssl
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    mail_from: str = ""
    admin_email: str = ""  # gets the traceback of every service job that fails
    site_url: str = ""  # the page's address, for the links in mails: https://example.org/
    # Users who are admins when logged in by the page's login (a token's own flag decides for tokens):
    # comma-separated names. They see every user's jobs in the API and the operations page.
    admins: str = ""
    # Anonymous jobs ([anonymous] section, see moi.services.anonymous): submissions an address (IPv6: its /64)
    # may make in an hour, and how many anonymous jobs may be unfinished at once (their quota, all together).
    anonymous_per_hour: int = 10
    anonymous_max_queued: int = 50
    anonymous_max_upload: int = 8 << 20  # bytes of an anonymous multipart body: anyone's files, kept until expiry
    max_upload: int = 64 << 20  # bytes of a multipart POST /api/v1/jobs (a service job's input files)
    # Code over the web ([security] section, see moi.compute.sandbox): who may run it, and as which uids.
    code_users: str = ""  # users who may submit Python or shell jobs over the API (admins and --code tokens may too)
    code_uids: str = ""  # "LOW-HIGH": the uids that web users' code runs as, one per user; empty: no code over the web
    code_python: str = ""  # the interpreter of that code, which every uid must be able to run; empty: sys.executable
    code_network: str = "none"  # none: that code has no network at all (not even loopback); host: the engine's
    code_max_processes: int = 256  # processes one user's code may have at once (its uid's RLIMIT_NPROC); 0: no limit
    # Inputs ([files] section, see moi.jobfiles.input_policy): the operator's grant of server paths and addresses.
    input_roots: str = ""  # directories whose files (and file:// URIs) any submitter may name; comma-separated
    uri_schemes: str = "https, http"  # schemes an input or resource URI may use (fsspec ones, s3, when listed)
    fetch_allow: str = ""  # internal addresses a fetch may reach: networks (10.1.2.0/24) or address:port
    fetch_max_bytes: int = 1 << 30  # bytes one fetched input or resource may hold
    fetch_timeout: float = 300.0  # seconds one fetch may take, redirects included
    # Time limits and retries (see moi.core.policy): the most retries a job may ask for, and the time limit of
    # a job that names none: [moi] time_limit in every context, [context NAME] time_limit in that one.
    max_retries: int = DEFAULT_MAX_RETRIES
    time_limit: float | None = None  # seconds; None: none
    context_time_limits: dict[str, float] = field(default_factory=dict)  # context name -> seconds
    schedulers: dict[str, SchedulerSpec] = field(default_factory=dict)  # [context NAME] with a scheduler

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def uses_embedded_cluster(self) -> bool:
        return not self.contexts

    @property
    def admin_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.admins.split(",") if name.strip())

    @property
    def login_methods(self) -> frozenset[str]:
        return frozenset(split_list(self.logins))

    @property
    def code_user_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.code_users.split(",") if name.strip())

    @property
    def code_uid_range(self) -> tuple[int, int] | None:
        """``code_uids`` as (low, high), both included; None when it is not set."""
        return _uid_range(self.code_uids) if self.code_uids.strip() else None

    @property
    def jobs_root(self) -> str:
        return os.path.abspath(self.jobs_dir or os.path.join(self.state_dir, "jobs"))

    def time_limit_of(self, context: str) -> float | None:
        """The time limit of a job of ``context`` that names none: the context's own, else ``time_limit``."""
        return self.context_time_limits.get(context, self.time_limit)


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "moi")


def _parse_contexts(text: str) -> dict[str, ContextSpec]:
    specs = [ContextSpec.parse(entry) for entry in text.split(",") if entry.strip()]
    return {spec.name: spec for spec in specs}


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    converters = {
        "ttl": int,
        "cluster_timeout": float,
        "engines": int,
        "hog_size": int,
        "hard_limit": int,
        "max_user_priority": int,
        "keep_expired": int,
        "max_upload": int,
        "code_max_processes": int,
        "fetch_max_bytes": int,
        "fetch_timeout": float,
        "smtp_port": int,
        "max_retries": int,
        "session_hours": float,
        "anonymous_per_hour": int,
        "anonymous_max_queued": int,
        "anonymous_max_upload": int,
    }
    out = dict(values)
    for name, convert in converters.items():
        if name in out:
            try:
                out[name] = convert(out[name])
            except (TypeError, ValueError):
                raise ConfigError(f"{name} must be a number, not {out[name]!r}") from None
    if isinstance(out.get("contexts"), str):
        out["contexts"] = _parse_contexts(out["contexts"])
    if isinstance(out.get("contexts"), (list, tuple)):
        out["contexts"] = _parse_contexts(",".join(out["contexts"]))
    if "time_limit" in out:
        out["time_limit"] = _time_limit(out["time_limit"], "time_limit")
    if "context_time_limits" in out:
        out["context_time_limits"] = _context_time_limits(out["context_time_limits"])
    out["schedulers"] = scheduler_specs(out.get("schedulers") or {})
    return out


def _time_limit(value: Any, what: str) -> float | None:
    """A time limit setting in seconds (``2h``, ``90s``, 600); empty: None. ConfigError, one line, otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return seconds_of(value, what)
    except InvalidValue as error:
        raise ConfigError(str(error)) from None


def _context_time_limits(given: Any) -> dict[str, float]:
    """Per-context time limits: a mapping of context names to durations, or the text ``big=12h, small=15m``."""
    if isinstance(given, str):
        pairs = [entry.partition("=") for entry in split_list(given)]
        if any(not sep or not name.strip() for name, sep, _ in pairs):
            raise ConfigError(f"context time limits are NAME=DURATION, comma-separated (big=12h), not {given!r}")
        given = {name.strip(): limit for name, _, limit in pairs}
    if not isinstance(given, dict):
        raise ConfigError("context_time_limits maps context names to durations such as 12h")
    limits = {}
    for name, limit in given.items():
        seconds = _time_limit(limit, f"[context {name}] time_limit")
        if seconds is not None:
            limits[str(name)] = seconds
    return limits


# `moi server`'s login methods: dev (any name, no password: loopback only), password (moi user add),
# pam (the machine's Unix accounts), header (a trusted proxy's user header) and oidc (an OpenID provider).
LOGIN_METHODS = ("dev", "password", "pam", "header", "oidc")

SCHEDULERS = ("leastload", "lru", "twobin", "weighted", "plainrandom", "pure")


def scheduler_args(scheduler: str) -> list[str]:
    """ipcontroller arguments for ``NAME`` or ``NAME+hwm=N`` (N: tasks an engine may hold; 0 no limit)."""
    name, plus, hwm = scheduler.partition("+hwm=")
    if name not in SCHEDULERS or (plus and not values.is_whole(hwm)):
        raise ConfigError(f"scheduler must be one of {', '.join(SCHEDULERS)}, optionally +hwm=N; not {scheduler!r}")
    args = [f"--TaskScheduler.scheme_name={name}"]
    return args + [f"--TaskScheduler.hwm={hwm}"] if plus else args


def build_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the INI file, then the environment, then ``overrides``."""
    values: dict[str, Any] = {"state_dir": default_state_dir()}
    config_fp = os.environ.get("MOI_CONFIG_FP")
    if config_fp:
        values.update(from_ini(config_fp))
    values.update(from_environment())
    values.update(overrides or {})
    settings = replace(Settings(), **_coerce(values))
    scheduler_args(settings.scheduler)  # a mistake shows now, not when the runtime starts
    _check_files(settings)
    _check_choices(settings)
    _check_numbers(settings)
    if settings.contexts and "default_context" not in values:
        settings = replace(settings, default_context=next(iter(settings.contexts)))
    _check_context_names(settings)
    return settings


def _check_choices(settings: Settings) -> None:
    if settings.code_uids.strip():
        _uid_range(settings.code_uids)  # likewise a bad [security] code_uids
    if settings.code_network not in ("none", "host"):
        raise ConfigError(f"[security] code_network must be none or host, not {settings.code_network!r}")
    unknown = settings.login_methods - set(LOGIN_METHODS)
    if unknown or not settings.login_methods:
        raise ConfigError(f"[server] logins lists methods of {', '.join(LOGIN_METHODS)}, not {settings.logins!r}")
    if "header" in settings.login_methods or settings.trusted_proxies.strip():
        _check_proxies(settings.trusted_proxies)
    if "oidc" in settings.login_methods:
        claims = (settings.oidc_username_claim, settings.oidc_admin_claim, settings.oidc_admin_group)
        check_oidc(settings.oidc_issuer, settings.oidc_client_id, settings.oidc_scopes, claims)
    if settings.secure_cookies not in ("auto", "on", "off"):
        raise ConfigError(f"[server] secure_cookies must be auto, on or off, not {settings.secure_cookies!r}")
    if settings.smtp_tls not in ("off", "starttls", "ssl"):
        raise ConfigError(f"[mail] tls must be off, starttls or ssl, not {settings.smtp_tls!r}")


def _check_numbers(settings: Settings) -> None:
    if settings.ttl <= 0:
        raise ConfigError(f"ttl must be a positive number of seconds, not {settings.ttl}")
    for name in ("hog_size", "hard_limit", "anonymous_per_hour", "anonymous_max_queued"):
        if getattr(settings, name) < 0:
            raise ConfigError(
                f"{name} must be 0 (no limit) or a positive number of jobs, not {getattr(settings, name)}"
            )
    if not -MAX_PRIORITY <= settings.max_user_priority <= MAX_PRIORITY:
        bounds = f"from {-MAX_PRIORITY} to {MAX_PRIORITY}"
        raise ConfigError(f"max_user_priority must be {bounds}, not {settings.max_user_priority}")
    if not 0 < settings.session_hours <= 24 * 366:
        raise ConfigError(f"[server] session_hours must be above 0 and at most a year, not {settings.session_hours}")
    if not 0 <= settings.max_retries <= MOST_RETRIES:
        raise ConfigError(f"max_retries must be a whole number from 0 to {MOST_RETRIES}, not {settings.max_retries}")


def _check_context_names(settings: Settings) -> None:
    """ConfigError for a per-context setting of a context that is not configured (a typo would go unnoticed)."""
    known = (list(settings.contexts) or [settings.default_context]) + list(settings.schedulers)
    for name in settings.context_time_limits:
        if name not in known:
            raise ConfigError(f"[context {name}] names no configured context; the contexts are {', '.join(known)}")


def _check_proxies(text: str) -> None:
    """The header login's proxies: at least one, each an address or a network."""
    try:
        networks = [ipaddress.ip_network(entry, strict=False) for entry in split_list(text)]
    except ValueError:
        networks = []
    if not networks:
        raise ConfigError(f"[server] trusted_proxies lists the proxies' addresses for logins = header, not {text!r}")
    if any(network.prefixlen == 0 for network in networks):
        raise ConfigError("[server] trusted_proxies must list the proxies, not every address (0.0.0.0/0, ::/0)")


def _uid_range(text: str) -> tuple[int, int]:
    low, dash, high = (part.strip() for part in text.partition("-"))
    if not (dash and values.is_whole(low, 10) and values.is_whole(high, 10)):
        raise ConfigError(f"[security] code_uids is a range of uids LOW-HIGH such as 200000-265535, not {text!r}")
    if not 0 < int(low) <= int(high) < 2**32 - 1:
        raise ConfigError(f"[security] code_uids {text!r} must go up from LOW to HIGH, above 0 (root), below 2**32-1")
    return int(low), int(high)


def imported(path: str) -> Any:
    """What ``package.module:name`` names (chooser, services, validators in the configuration);
    ImportError, AttributeError or ValueError saying why it cannot be had."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError("it is not package.module:name")
    found = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _check_files(settings: Settings) -> None:
    """ConfigError for a [files] setting moi cannot use, said when the settings are read."""
    parse_allow(split_list(settings.fetch_allow))
    own = [os.path.realpath(place) for place in (settings.state_dir, settings.jobs_root) if place]
    for root in split_list(settings.input_roots):
        if not os.path.isabs(root):
            raise ConfigError(f"[files] input_roots lists {root!r}; an input root is an absolute path")
        if any(under(place, os.path.realpath(root)) for place in own):
            raise ConfigError(
                f"[files] input_roots lists {root!r}, which holds moi's state directory or jobs root: "
                "every user could read moi's secrets and each other's files; list only data directories"
            )
    for scheme in split_list(settings.uri_schemes):
        if not scheme.replace("+", "").replace("-", "").isalnum():
            raise ConfigError(f"[files] uri_schemes lists {scheme!r}, which is not a URI scheme")
    if settings.fetch_max_bytes <= 0 or not 0 < settings.fetch_timeout < float("inf"):
        raise ConfigError("[files] fetch_max_bytes and fetch_timeout are positive numbers")
