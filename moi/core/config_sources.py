"""Where settings come from: the INI file named by ``MOI_CONFIG_FP`` and the environment, read as text.

``moi.core.config.build_settings`` merges what these give (later sources win), then converts and checks it:
nothing here knows what a value means, only under which setting it goes. Each INI section's options:

- ``[redis]``: ``url``, or ``host``/``port``/``password``/``db``, or ``sentinels`` with ``service``;
- ``[ipython]``: ``context`` (the contexts) and ``default``;
- ``[moi]``: the settings of ``_MOI_OPTIONS``, each under its own name;
- ``[mail]``, ``[files]``, ``[security]``, ``[server]``, ``[anonymous]``: their options (``_MAIL_OPTIONS``, ...);
- ``[context NAME]``: what one context's jobs get by default (``_CONTEXT_OPTIONS``: ``time_limit``); a section
  that names a ``scheduler`` makes a scheduler context (``moi.core.scheduler_settings``), its options as they are.
"""

from __future__ import annotations

import configparser
import os
from typing import Any
from urllib.parse import quote

from moi.core.errors import ConfigError
from moi.core.scheduler_settings import SCHEDULER_OPTIONS

_MOI_OPTIONS = frozenset(
    ("key_prefix", "state_dir", "scheduler", "hog_size", "hard_limit", "chooser", "jobs_dir", "ttl")
    + ("services", "keep_expired", "site_url", "max_upload", "admins", "max_user_priority")
    + ("max_retries", "time_limit")
)

# [mail] option -> setting
_MAIL_OPTIONS = {
    "host": "smtp_host",
    "port": "smtp_port",
    "tls": "smtp_tls",
    "user": "smtp_user",
    "password": "smtp_password",
    "from": "mail_from",
    "admin": "admin_email",
}

_FILES_OPTIONS = ("input_roots", "uri_schemes", "fetch_allow", "fetch_max_bytes", "fetch_timeout")

_SECURITY_OPTIONS = ("code_users", "code_uids", "code_python", "code_network", "code_max_processes")

_SERVER_OPTIONS = (
    "logins",
    "session_hours",
    "login_header",
    "trusted_proxies",
    "proxy_secret",
    "secure_cookies",
    "pam_service",
    "oidc_issuer",
    "oidc_client_id",
    "oidc_client_secret",
    "oidc_name",
    "oidc_scopes",
    "oidc_username_claim",
    "oidc_admin_claim",
    "oidc_admin_group",
)

# [anonymous] option -> setting
_ANONYMOUS_OPTIONS = {
    "max_per_hour_per_address": "anonymous_per_hour",
    "max_queued": "anonymous_max_queued",
    "max_upload": "anonymous_max_upload",
}

_CONTEXT_OPTIONS = ("time_limit",)
CONTEXT_SECTION = "context"  # [context NAME]: one context's defaults

_ENVIRONMENT = {
    "MOI_REDIS_URL": "redis_url",
    "MOI_CONTEXTS": "contexts",
    "MOI_DEFAULT_CONTEXT": "default_context",
    "MOI_KEY_PREFIX": "key_prefix",
    "MOI_TTL": "ttl",
    "MOI_CLUSTER_TIMEOUT": "cluster_timeout",
    "MOI_STATE_DIR": "state_dir",
    "MOI_ENGINES": "engines",
    "MOI_SCHEDULER": "scheduler",
    "MOI_COOKIE_SECRET": "cookie_secret",
    "MOI_LOGINS": "logins",
    "MOI_SESSION_HOURS": "session_hours",
    "MOI_LOGIN_HEADER": "login_header",
    "MOI_TRUSTED_PROXIES": "trusted_proxies",
    "MOI_OIDC_ISSUER": "oidc_issuer",
    "MOI_OIDC_CLIENT_ID": "oidc_client_id",
    "MOI_OIDC_CLIENT_SECRET": "oidc_client_secret",
    "MOI_PROXY_SECRET": "proxy_secret",
    "MOI_SECURE_COOKIES": "secure_cookies",
    "MOI_PAM_SERVICE": "pam_service",
    "MOI_HOG_SIZE": "hog_size",
    "MOI_HARD_LIMIT": "hard_limit",
    "MOI_MAX_USER_PRIORITY": "max_user_priority",
    "MOI_MAX_RETRIES": "max_retries",
    "MOI_TIME_LIMIT": "time_limit",
    "MOI_CONTEXT_TIME_LIMITS": "context_time_limits",
    "MOI_CHOOSER": "chooser",
    "MOI_JOBS_DIR": "jobs_dir",
    "MOI_SERVICES": "services",
    "MOI_KEEP_EXPIRED": "keep_expired",
    "MOI_SITE_URL": "site_url",
    "MOI_MAX_UPLOAD": "max_upload",
    "MOI_ADMINS": "admins",
    "MOI_CODE_USERS": "code_users",
    "MOI_CODE_UIDS": "code_uids",
    "MOI_CODE_PYTHON": "code_python",
    "MOI_CODE_NETWORK": "code_network",
    "MOI_CODE_MAX_PROCESSES": "code_max_processes",
    "MOI_INPUT_ROOTS": "input_roots",
    "MOI_URI_SCHEMES": "uri_schemes",
    "MOI_FETCH_ALLOW": "fetch_allow",
    "MOI_FETCH_MAX_BYTES": "fetch_max_bytes",
    "MOI_FETCH_TIMEOUT": "fetch_timeout",
    "MOI_SMTP_HOST": "smtp_host",
    "MOI_SMTP_PORT": "smtp_port",
    "MOI_SMTP_TLS": "smtp_tls",
    "MOI_SMTP_USER": "smtp_user",
    "MOI_SMTP_PASSWORD": "smtp_password",
    "MOI_MAIL_FROM": "mail_from",
    "MOI_ADMIN_EMAIL": "admin_email",
    "MOI_ANONYMOUS_PER_HOUR": "anonymous_per_hour",
    "MOI_ANONYMOUS_MAX_QUEUED": "anonymous_max_queued",
    "MOI_ANONYMOUS_MAX_UPLOAD": "anonymous_max_upload",
}


def from_ini(path: str) -> dict[str, Any]:
    """The settings an INI file gives, as text (contexts as their one line); ConfigError for an unknown option."""
    parser = configparser.ConfigParser()
    if not parser.read(path):
        raise ConfigError(f"Cannot read the configuration file {path} named by MOI_CONFIG_FP")
    values: dict[str, Any] = {}
    if parser.has_section("redis"):
        values["redis_url"] = _redis_url_from_section(parser["redis"])
    if parser.has_section("ipython"):
        values.update(_ipython_section(parser["ipython"]))
    if parser.has_section("moi"):
        values.update({name: value for name, value in parser["moi"].items() if name in _MOI_OPTIONS})
    for name, options in (("mail", _MAIL_OPTIONS), ("anonymous", _ANONYMOUS_OPTIONS)):
        if parser.has_section(name):
            values.update(_mapped_section(parser[name], options))
    for name, named in (("files", _FILES_OPTIONS), ("security", _SECURITY_OPTIONS), ("server", _SERVER_OPTIONS)):
        if parser.has_section(name):
            values.update(_named_options(parser[name], named))
    per_context = {"context_time_limits": _context_time_limits(parser), "schedulers": _scheduler_sections(parser)}
    values.update({name: found for name, found in per_context.items() if found})
    return values


def from_environment() -> dict[str, Any]:
    """The settings the ``MOI_*`` variables give, as text."""
    return {name: os.environ[variable] for variable, name in _ENVIRONMENT.items() if os.environ.get(variable)}


def _redis_url_from_section(section: configparser.SectionProxy) -> str:
    if "url" in section:
        return section["url"]
    password = section.get("password", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    db = section.get("db", "0")
    if "sentinels" in section:  # a list of sentinels and the service they watch: a sentinel URL
        sentinels = ",".join(entry.strip() for entry in section["sentinels"].split(",") if entry.strip())
        return f"redis+sentinel://{auth}{sentinels}/{quote(section.get('service', 'mymaster'), safe='')}/{db}"
    host = section.get("host", "127.0.0.1")
    return f"redis://{auth}{host}:{section.get('port', '6379')}/{db}"


def _ipython_section(section: configparser.SectionProxy) -> dict[str, str]:
    values = {}
    if "context" in section:
        values["contexts"] = section["context"]
    if "default" in section:
        values["default_context"] = section["default"].strip()
    return values


def _mapped_section(section: configparser.SectionProxy, options: dict[str, str]) -> dict[str, str]:
    """A section whose options name settings (``options``: option -> setting); ConfigError for any other option."""
    values = {}
    for name, value in section.items():
        if name not in options:
            raise ConfigError(f"[{section.name}] has no option {name!r}; the options are {', '.join(options)}")
        values[options[name]] = value
    return values


def _named_options(section: configparser.SectionProxy, options: tuple[str, ...]) -> dict[str, str]:
    """A section whose options are settings of the same names; ConfigError for any other option."""
    unknown = [name for name in section if name not in options and name not in section.parser.defaults()]
    if unknown:
        raise ConfigError(f"[{section.name}] has no option {unknown[0]!r}; the options are {', '.join(options)}")
    return {name: section[name] for name in options if name in section}


def _context_time_limits(parser: configparser.ConfigParser) -> dict[str, str]:
    """Each ``[context NAME]`` section's ``time_limit``, by context name (checked by ``build_settings``)."""
    limits = {}
    for name, section in _context_sections(parser):
        allowed = SCHEDULER_OPTIONS + _CONTEXT_OPTIONS if "scheduler" in section else _CONTEXT_OPTIONS
        options = _named_options(section, allowed)
        if "time_limit" in options:
            limits[name] = options["time_limit"]
    return limits


def _scheduler_sections(parser: configparser.ConfigParser) -> dict[str, dict[str, str]]:
    """The ``[context NAME]`` sections that name a scheduler: name -> their options (checked by ``build_settings``)."""
    return {
        name: {option: section[option] for option in section if option != "time_limit"}
        for name, section in _context_sections(parser)
        if "scheduler" in section
    }


def _context_sections(parser: configparser.ConfigParser) -> list[tuple[str, configparser.SectionProxy]]:
    found = []
    for section in parser.sections():
        kind, _, name = section.strip().partition(" ")
        if kind != CONTEXT_SECTION:
            continue
        if not name.strip():
            raise ConfigError(f"[{section}] names no context; write [context NAME]")
        found.append((name.strip(), parser[section]))
    return found
