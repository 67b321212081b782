"""What a trusted reverse proxy tells ``moi server``: the client's address, and (``logins = header``) its user.

A request counts as the proxy's only when its socket comes from ``[server] trusted_proxies``
(moi never takes X-Forwarded-For from anyone else, and Tornado's ``xheaders`` stays off). From
the proxy, the client is the last X-Forwarded-For hop: the one the proxy itself appended (any
earlier hop is whatever the client sent). The user header counts only from the proxy, only once
in a request, and, with ``[server] proxy_secret``, only with that secret in ``X-Moi-Proxy-Secret``
(compared in constant time): then a local process that reaches moi's port directly names no one.
With ``proxy_secret`` set, X-Forwarded-For too counts only beside the secret.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from tornado.httputil import HTTPServerRequest

from moi.core.log_limit import LimitedLog
from moi.core.redact import printable
from moi.jobs import connections
from moi.relay.proxy_trust import SECRET_HEADER, has_secret, trusts

log = logging.getLogger("moi.server")
limited = LimitedLog(log)

PROXY_ONLY = "Log in through this site's login proxy."
TWICE = "The login header came more than once: refused."


def client_address(request: HTTPServerRequest) -> str:
    """The client's address: the socket's, or from a trusted proxy the last X-Forwarded-For hop.

    With ``[server] proxy_secret`` the hop counts only beside that secret: else any local process
    reaching moi's port directly could name a fresh address per attempt and escape the login throttle.
    """
    socket = request.remote_ip or "?"
    if not trusts(socket):
        return socket
    secret = connections.settings().proxy_secret
    if secret and not has_secret(request, secret):
        return socket
    hops = ",".join(request.headers.get_list("X-Forwarded-For")).split(",")
    return _hop_address(hops[-1]) or socket


def _hop_address(hop: str) -> str:
    """An X-Forwarded-For hop's address, without a port (``1.2.3.4:5678``, ``[::1]:80``); "" if none."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


@dataclass(frozen=True)
class ProxyLogin:
    """A proxy's user (None: no user header), or why its header is refused (then ``status``)."""

    user: str | None = None
    refusal: str = ""
    status: int = 401


def proxy_login(request: HTTPServerRequest) -> ProxyLogin:
    """The user named by ``[server] login_header``, when the request comes straight from a trusted proxy."""
    settings = connections.settings()
    names = request.headers.get_list(settings.login_header)
    if not names:
        return ProxyLogin()
    socket = request.remote_ip or "?"
    if not trusts(socket):
        limited.warning("ignored a %s header from %s, not a trusted proxy", settings.login_header, printable(socket))
        return ProxyLogin()
    if len(names) > 1:
        limited.warning("refused a login: %s came %d times from %s", settings.login_header, len(names), socket)
        return ProxyLogin(refusal=TWICE, status=400)
    if settings.proxy_secret and not has_secret(request, settings.proxy_secret):
        limited.warning("refused a login from %s: no or wrong %s", printable(socket), SECRET_HEADER)
        return ProxyLogin(refusal=PROXY_ONLY)
    return ProxyLogin(names[0].strip())


def proxy_warnings(bind_address: str) -> list[str]:
    """What ``moi server`` warns about at start: a trusted proxy address any local process also has.

    Without ``proxy_secret`` such a process names any client address (escaping the login throttle,
    whatever the login method) and, with ``logins = header``, any user.
    """
    settings = connections.settings()
    if settings.proxy_secret:
        return []
    risk = "forge X-Forwarded-For past the login throttle"
    if "header" in settings.login_methods:
        risk = f"log in as anyone with {settings.login_header}"
    return [
        f"[server] trusted_proxies holds {probe}: any process on this machine can {risk}; "
        "list only the proxy's address, or set [server] proxy_secret"
        for probe in sorted({"127.0.0.1", "::1", bind_address.strip("[]")})
        if trusts(probe)
    ]
