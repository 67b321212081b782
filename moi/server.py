"""``moi server``: a small Tornado application showing each user's jobs live.

Routes: ``/login`` (a development login: any name, kept in the signed cookie
``user``; an application replaces it with its own authentication),
``/logout``, ``/`` (the logged-in user's live job list, built with moi.js),
``/moi-ws/`` (the websocket relay) and ``/static/moi.js``.

The cookie secret is the configured one (``MOI_COOKIE_SECRET``) or one
generated once and kept in the state directory, so logins survive restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado.web import Application, RequestHandler, authenticated

from . import connections
from .hub import Hub
from .keys import Keys
from .redact import masked_url
from .store import store_for
from .watchdog import watch
from .websocket import HUB_SETTING, MOIMessageHandler

log = logging.getLogger("moi.server")

PACKAGE = Path(__file__).resolve().parent
STATIC_PATH = PACKAGE / "static"
TEMPLATE_PATH = PACKAGE / "templates"
SECRET_FILE = "cookie_secret"
MAX_USER_NAME = 200


class _UserHandler(RequestHandler):
    def get_current_user(self) -> Any:
        user = self.get_signed_cookie("user")
        return user.decode() if user else None


class LoginHandler(_UserHandler):
    def get(self) -> None:
        self.render("login.html")

    def post(self) -> None:
        user = self.get_body_argument("user", "").strip()[:MAX_USER_NAME]
        if not user:
            self.redirect("/login")
            return
        self.set_signed_cookie("user", user, httponly=True, samesite="Lax")
        self.redirect(self.get_query_argument("next", "/") if self._safe_next() else "/")

    def _safe_next(self) -> bool:
        target = self.get_query_argument("next", "/")
        # Only a path on this site: "//host" and "/\\host" would leave it.
        return target.startswith("/") and not target.startswith(("//", "/\\"))


class LogoutHandler(_UserHandler):
    def get(self) -> None:
        self.clear_cookie("user")
        self.redirect("/login")


class IndexHandler(_UserHandler):
    @authenticated
    def get(self) -> None:
        self.render("index.html", user=self.current_user)


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
        (r"/", IndexHandler),
        (r"/login", LoginHandler),
        (r"/logout", LogoutHandler),
        (r"/moi-ws/", MOIMessageHandler),
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


async def serve(port: int, address: str = "127.0.0.1", ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM; ``ready(url)`` is called once it listens."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before anyone is told it is up: a stop then stops it cleanly
        loop.add_signal_handler(signum, stop.set)
    current = connections.settings()
    hub = default_hub()
    app = make_app(hub, cookie_secret=cookie_secret(current.state_dir))
    server = app.listen(port, address=address)
    log.info("moi server on http://%s:%d/ (redis %s)", address, port, masked_url(hub.url))
    if ready is not None:
        ready(f"http://{address}:{port}/")
    # Jobs whose engine died, or whose cluster went away, end even if nothing else watches.
    watching = loop.create_task(watch(store_for(hub.url, hub.keys.prefix, hub.ttl), stop))
    await stop.wait()
    server.stop()
    await watching
    await hub.close()
