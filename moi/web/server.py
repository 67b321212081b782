"""``moi server``: a small Tornado application showing each user's jobs live.

Routes: ``/login`` (a development login: any name, kept in the signed cookie
``user``; an application replaces it with its own authentication; names that
could alias another user's group, see ``moi.core.keys.user_name_problem``, are refused),
``/logout`` (a POST), the dashboard's pages (``/``, ``/jobs/<id>``, ``/submit``, ``/ops``
and ``/list``, see ``moi.web.dashboard``), ``/metrics`` (``moi.web.metrics``),
``/moi-ws/`` (the websocket relay), ``/moi-files/<job id>/[path]`` (a job's files,
see ``moi.web.file_routes``), ``/api/v1/...`` (the HTTP API, see ``moi.web.api``),
``/static/moi.js`` and ``/static/moi_list.js`` (the original moi's list widget).

The cookie secret is the configured one (``MOI_COOKIE_SECRET``) or one
generated once and kept in the state directory, so logins survive restarts.

Anyone who reaches the development login can log in as anyone: ``serve``
says so when it starts, and refuses a non-loopback address unless told
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

from tornado.web import Application, RequestHandler

from moi.core.errors import InvalidUserName, NotLoopback
from moi.core.keys import Keys, user_name_problem
from moi.core.redact import masked_url
from moi.jobs import connections
from moi.queue import jobqueue as queue
from moi.relay.hub import Hub
from moi.relay.websocket import HUB_SETTING, MOIMessageHandler, cookie_user
from moi.storage.store import store_for
from moi.upkeep.passes import watch
from moi.web import api, api_handler, api_ops, dashboard, metrics, openapi
from moi.web.file_routes import FILES_ROUTE

log = logging.getLogger("moi.server")

PACKAGE = Path(__file__).resolve().parent
STATIC_PATH = PACKAGE / "static"
TEMPLATE_PATH = PACKAGE / "templates"
SECRET_FILE = "cookie_secret"
DEV_LOGIN_WARNING = "moi server: development login: anyone who can reach this server can log in as any user"


class _UserHandler(RequestHandler):
    def get_current_user(self) -> Any:
        return cookie_user(self.get_signed_cookie("user"))


class LoginHandler(_UserHandler):
    def get(self) -> None:
        self.render("login.html", error=None, next=self._next())

    def post(self) -> None:
        user = self.get_body_argument("user", "").strip()
        problem = user_name_problem(user)
        if problem is not None:
            # One line, no cookie: a name like another user's group id must not log in at all.
            log.info("refused a login: %s", InvalidUserName(user, problem))
            self.set_status(400)
            self.render("login.html", error=f"That user name is refused: {problem}.", next=self._next())
            return
        self.set_signed_cookie("user", user, httponly=True, samesite="Lax")
        self.redirect(self._next())

    def _next(self) -> str:
        # strip=False: Tornado would trim the very whitespace that makes a target unsafe.
        return safe_next(self.get_query_argument("next", "/", strip=False))


def safe_next(target: str) -> str:
    """``target`` when it is a path on this site, else ``/``.

    Browsers drop tabs and newlines and read ``\\`` as ``/``, so ``/\\t/evil.example`` is
    ``//evil.example``, another site: any control character, whitespace or backslash is
    refused, and so is ``//``. (A CR or LF would also break the Location header: a 500.)
    """
    if not target.startswith("/") or "//" in target:
        return "/"
    if any(char.isspace() or not char.isprintable() or char == "\\" for char in target):
        return "/"
    return target


class LogoutHandler(_UserHandler):
    """Logout is a POST with the XSRF token (the page's button): a link, an image or another site's
    page cannot log a user out. A GET is 405."""

    def post(self) -> None:
        self.clear_cookie("user")
        self.redirect("/login")


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
        (r"/moi-ws/", MOIMessageHandler),
        FILES_ROUTE,
        *api_ops.ROUTES,
        *api.ROUTES,
        *metrics.ROUTES,
        *openapi.routes(),
    ]
    defaults: dict[str, Any] = {
        "static_path": str(STATIC_PATH),
        "template_path": str(TEMPLATE_PATH),
        "login_url": "/login",
        "xsrf_cookies": True,
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


async def serve(
    port: int,
    address: str = "127.0.0.1",
    ready: Callable[[str], None] | None = None,
    dev_login_anywhere: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM; ``ready(url)`` is called once it listens.

    Raises NotLoopback for a non-loopback ``address`` unless ``dev_login_anywhere``.
    """
    if not (dev_login_anywhere or is_loopback(address)):
        raise NotLoopback(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anyone is told it is up: a stop then stops it cleanly
        loop.add_signal_handler(signum, stop.set)
    current = connections.settings()
    hub = default_hub()
    app = make_app(hub, cookie_secret=cookie_secret(current.state_dir))
    # Tornado reads a body whole before a handler sees it: bound it by the largest one moi takes.
    server = app.listen(port, address=address, max_body_size=max(current.max_upload, api_handler.MAX_BODY) + (1 << 16))
    log.warning(DEV_LOGIN_WARNING)
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
