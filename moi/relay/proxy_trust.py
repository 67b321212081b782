"""Whether a request comes from a trusted reverse proxy (``[server] trusted_proxies``, with
``proxy_secret`` in ``X-Moi-Proxy-Secret`` when set, compared in constant time).

Below the web layer so that a session check (``moi.relay.session_check``) can hear the proxy too:
a header login's session ends once its proxy names another user (``names_another``).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress

from tornado.httputil import HTTPServerRequest

from moi.core.files_settings import split_list
from moi.jobs import connections

SECRET_HEADER = "X-Moi-Proxy-Secret"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(text: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in split_list(text))


def trusts(address: str) -> bool:
    """Whether ``address`` (a socket's) is one of ``[server] trusted_proxies``."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in _networks(connections.settings().trusted_proxies))


def has_secret(request: HTTPServerRequest, secret: str) -> bool:
    given = request.headers.get_list(SECRET_HEADER)
    return len(given) == 1 and hmac.compare_digest(given[0].encode(), secret.encode())


def from_proxy(request: HTTPServerRequest) -> bool:
    """Whether the request is the trusted proxy's: its socket trusted, and its secret when one is set."""
    secret = connections.settings().proxy_secret
    return trusts(request.remote_ip or "") and (not secret or has_secret(request, secret))


def names_another(request: HTTPServerRequest, user: str) -> bool:
    """Whether, with ``logins = header``, the trusted proxy names (once) a user other than ``user``."""
    settings = connections.settings()
    if "header" not in settings.login_methods:
        return False
    names = request.headers.get_list(settings.login_header)
    return len(names) == 1 and names[0].strip() != user and from_proxy(request)
