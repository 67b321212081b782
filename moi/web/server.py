"""``moi server``: a small Tornado application showing each user's jobs live.

Routes: ``/login`` (the login methods of ``[server] logins``, see ``moi.web.login``: the
development login, any name, accounts with passwords, the machine's accounts (PAM), a trusted
proxy's header; a login is a server-side session),
``/logout`` (a POST, ending the session), the dashboard's pages (``/``, ``/jobs/<id>``, ``/submit``, ``/ops``
and ``/list``, see ``moi.web.dashboard``), ``/metrics`` (``moi.web.metrics``),
``/moi-ws/`` (the websocket relay), ``/moi-files/<job id>/[path]`` (a job's files,
see ``moi.web.file_routes``), ``/api/v1/...`` (the HTTP API, see ``moi.web.api``),
``/static/moi.js`` and ``/static/moi_list.js`` (the original moi's list widget), and, with no login,
anonymous jobs and the one job each secret link ``/r/<id>/<secret>`` leads to (``moi.web.anonymous``).

The cookie secret is the configured one (``MOI_COOKIE_SECRET``) or one
generated once and kept in the state directory, so logins survive restarts.

Anyone who reaches the development login can log in as anyone: ``serve``
says so when it starts, and refuses a non-loopback address while it is on, unless told
``dev_login_anywhere`` (``moi server --insecure-dev-login-anywhere``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado.web import Application

from moi.core.errors import NotLoopback
from moi.core.keys import Keys
from moi.core.redact import masked_url
from moi.jobs import connections
from moi.queue import jobqueue as queue
from moi.relay.hub import Hub
from moi.relay.session_check import SESSIONS_SETTING
from moi.relay.websocket import HUB_SETTING, MOIMessageHandler
from moi.storage.store import store_for
from moi.upkeep.passes import watch
from moi.web import (
    anonymous,
    api,
    api_accounts,
    api_bulk,
    api_handler,
    api_ops,
    dashboard,
    login_oidc,
    metrics,
    openapi,
)
from moi.web.file_routes import FILES_ROUTE
from moi.web.login import SECURE_SETTING, LoginHandler, LogoutHandler, safe_next
from moi.web.proxy import proxy_warnings

log = logging.getLogger("moi.server")

PACKAGE = Path(__file__).resolve().parent
STATIC_PATH = PACKAGE / "static"
TEMPLATE_PATH = PACKAGE / "templates"
SECRET_FILE = "cookie_secret"
DEV_LOGIN_WARNING = "moi server: development login: anyone who can reach this server can log in as any user"


def cookie_secret(state_dir: str) -> str:
    """The configured secret, else the one kept in ``state_dir`` (made on first use)."""
    configured = connections.settings().cookie_secret
    if configured:
        return configured
    path = Path(state_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created readable by the owner only; O_EXCL: two servers starting at once agree.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def make_app(hub: Hub | None = None, **settings: Any) -> Application:
    """The moi server application; ``settings`` go to Tornado (cookie_secret, debug, ...)."""
    routes = [
        *dashboard.ROUTES,
        (r"/login", LoginHandler),
        (r"/logout", LogoutHandler),
        *login_oidc.ROUTES,
        (r"/moi-ws/", MOIMessageHandler),
        FILES_ROUTE,
        *api_ops.ROUTES,
        *api_bulk.ROUTES,  # before api's: /jobs/bulk/cancel is no job's action
        *anonymous.ROUTES,
        *api_accounts.ROUTES,
        *api.ROUTES,
        *metrics.ROUTES,
        *openapi.routes(),
    ]
    defaults: dict[str, Any] = {
        "static_path": str(STATIC_PATH),
        "template_path": str(TEMPLATE_PATH),
        "login_url": "/login",
        "xsrf_cookies": True,
        "log_function": anonymous.log_request,  # Tornado's line, with a link's secret left out of any path
    }
    if hub is not None:
        defaults[HUB_SETTING] = hub
    return Application(routes, **{**defaults, **settings})


def default_hub() -> Hub:
    current = connections.settings()
    return Hub(connections.redis_url(), Keys(current.key_prefix), current.ttl)


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP or ``localhost``) is reachable from this machine only."""
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def bind_allowed(address: str, dev_login_anywhere: bool = False) -> bool:
    """Whether ``moi server`` may listen on ``address``: a loopback one, or any once the development
    login is off (``[server] logins`` without ``dev``) or ``--insecure-dev-login-anywhere`` is given."""
    return dev_login_anywhere or is_loopback(address) or "dev" not in connections.settings().login_methods


def login_settings(address: str) -> dict[str, Any]:
    """The application settings of ``moi server``'s logins: server-side sessions, and cookies sent over
    HTTPS only (``[server] secure_cookies``; auto: unless listening on loopback, where HTTPS is rare,
    with neither an https ``[moi] site_url`` nor ``trusted_proxies``: either says a TLS proxy is in front)."""
    settings = connections.settings()
    behind_tls = settings.site_url.strip().lower().startswith("https://") or bool(settings.trusted_proxies.strip())
    wanted = settings.secure_cookies
    secure = wanted == "on" or (wanted == "auto" and (behind_tls or not is_loopback(address)))
    kept: dict[str, Any] = {SESSIONS_SETTING: True, SECURE_SETTING: secure}
    return {**kept, "xsrf_cookie_kwargs": {"secure": True}} if secure else kept


PAM_LOGIN_WARNING = (
    "[server] pam_service is login: its lockout modules (pam_faillock) can lock Unix accounts on failed "
    "web logins; make /etc/pam.d/moi with pam_unix only and set pam_service = moi (docs/deploy.md)"
)


def start_warnings(address: str) -> list[str]:
    """What ``moi server`` warns about when it starts on ``address``."""
    settings = connections.settings()
    dev = [DEV_LOGIN_WARNING] if "dev" in settings.login_methods else []
    pam = [PAM_LOGIN_WARNING] if "pam" in settings.login_methods and settings.pam_service == "login" else []
    return dev + pam + proxy_warnings(address)


async def serve(
    port: int,
    address: str = "127.0.0.1",
    ready: Callable[[str], None] | None = None,
    dev_login_anywhere: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM; ``ready(url)`` is called once it listens.

    Raises NotLoopback for a non-loopback ``address`` with the development login on, unless ``dev_login_anywhere``.
    """
    if not bind_allowed(address, dev_login_anywhere):
        raise NotLoopback(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anyone is told it is up: a stop then stops it cleanly
        loop.add_signal_handler(signum, stop.set)
    current = connections.settings()
    hub = default_hub()
    app = make_app(hub, cookie_secret=cookie_secret(current.state_dir), **login_settings(address))
    # Tornado reads a body whole before a handler sees it: bound it by the largest one moi takes.
    server = app.listen(port, address=address, max_body_size=max(current.max_upload, api_handler.MAX_BODY) + (1 << 16))
    for warning in start_warnings(address):
        log.warning(warning)
    log.info("moi server on http://%s:%d/ (redis %s)", address, port, masked_url(hub.url))
    if ready is not None:
        ready(f"http://{address}:{port}/")
    # Jobs whose engine died, or whose cluster went away, end even if nothing else watches;
    # queued jobs are dispatched even if no submitter is alive.
    queue.serialisation_ready()  # here, before any thread: ipyparallel's import is not thread-safe
    watching = loop.create_task(watch(store_for(hub.url, hub.keys.prefix, hub.ttl), stop))
    await loop.run_in_executor(None, connections.dispatch_all)
    await stop.wait()
    server.stop()
    await watching
    await hub.close()


__all__ = ["LoginHandler", "LogoutHandler", "bind_allowed", "make_app", "safe_next", "serve"]
