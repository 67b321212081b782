"""The checks of the ``oidc`` login's settings (``[server] oidc_*``), said when the settings are read.

The issuer is where moi fetches the provider's discovery document, keys and tokens from: over
https, so nobody on the path can hand moi keys of their own; plain http only to this machine
(a provider run beside moi, or a test's).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from moi.core.errors import ConfigError


def issuer_problem(issuer: str) -> str | None:
    """Why ``issuer`` cannot be an OpenID provider's issuer URL, or None when it can."""
    try:
        parts = urlsplit(issuer)
        host = parts.hostname or ""
    except ValueError:
        return "it is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return "it is not an http(s) URL with a host"
    if parts.query or parts.fragment:
        return "an issuer has no query or fragment"
    if parts.scheme == "http" and not _is_loopback(host):
        return "it must be https (plain http only to a loopback address)"
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_oidc(issuer: str, client_id: str, scopes: str, claims: tuple[str, str, str]) -> None:
    """ConfigError, one line naming the setting, for an oidc login moi cannot use; ``claims``: the
    username claim, the admin claim and the admin group."""
    problem = issuer_problem(issuer)
    if problem is not None:
        raise ConfigError(f"[server] oidc_issuer is the OpenID provider's issuer URL for logins = oidc: {problem}")
    if not client_id.strip():
        raise ConfigError("[server] oidc_client_id is this server's client id at the OpenID provider (logins = oidc)")
    if "openid" not in scopes.split():
        raise ConfigError(f"[server] oidc_scopes must include openid, not {scopes!r}")
    username, admin_claim, admin_group = (claim.strip() for claim in claims)
    if not username:
        raise ConfigError("[server] oidc_username_claim names the claim that names the login (preferred_username)")
    if bool(admin_claim) != bool(admin_group):
        raise ConfigError("[server] oidc_admin_claim and oidc_admin_group go together (groups, and the admins' group)")
