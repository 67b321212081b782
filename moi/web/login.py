"""``/login`` and ``/logout`` of ``moi server``: the login methods of ``[server] logins``.

``dev``: any name, no password (anyone who reaches the server is anyone; loopback only,
unless ``--insecure-dev-login-anywhere``). ``password``: an account of ``moi user add`` and
its password (``moi.storage.accounts``). ``header``: the user a trusted proxy names in
``[server] login_header``, read on ``GET /login`` from a request whose socket comes from
``[server] trusted_proxies`` only (the header from anywhere else is ignored). With ``dev``
and ``password``, a name that has an account needs its password and any other name logs in
without one. Names ``moi.core.keys.user_name_problem``
refuses never log in. A wrong password and an unknown name get the same answer (401, the
same line), after the same work; failures are throttled per account and per address
(``moi.storage.login_throttle``: 429 and the wait, the password not even checked). A
password is never logged nor shown. Each login is a session (``moi.storage.sessions``):
its id in the signed cookie ``moi_session`` beside ``user``; logging out ends it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

from moi.core.errors import InvalidUserName, MoiError
from moi.core.files_settings import split_list
from moi.core.keys import user_name_problem
from moi.core.redact import printable
from moi.jobs import connections
from moi.relay.session_check import SESSION_COOKIE, SESSIONS_SETTING
from moi.relay.websocket import cookie_user, hub_for
from moi.storage import accounts, login_throttle, sessions
from moi.web.oidc_button import login_oidc_button

log = logging.getLogger("moi.server")

WRONG = "Wrong user name or password."
PROXY_ONLY = "Log in through this site's login proxy."


def proxy_user(request: HTTPServerRequest) -> str | None:
    """The user named by ``[server] login_header``, when the request comes straight from a trusted proxy
    (its socket's address: moi reads no X-Forwarded-For); None otherwise."""
    settings = connections.settings()
    name = request.headers.get(settings.login_header)
    if name is None:
        return None
    try:
        address = ipaddress.ip_address(request.remote_ip or "")
    except ValueError:
        return None
    trusted = any(address in ipaddress.ip_network(net, strict=False) for net in split_list(settings.trusted_proxies))
    if not trusted:
        log.warning("ignored a %s header from %s, not a trusted proxy", settings.login_header, printable(str(address)))
        return None
    return name.strip()


class _UserHandler(RequestHandler):
    def get_current_user(self) -> Any:
        return cookie_user(self.get_signed_cookie("user"))


class LoginHandler(_UserHandler):
    async def get(self) -> None:
        methods = connections.settings().login_methods
        user = proxy_user(self.request) if "header" in methods else None
        if user is not None:
            await self._log_in(user, lambda: self._checked_proxy(user))
        elif not methods & {"dev", "password", "oidc"}:
            self._page(PROXY_ONLY, 401)
        else:
            self._page(None)

    async def post(self) -> None:
        if not connections.settings().login_methods & {"dev", "password"}:
            self._page(PROXY_ONLY, 403)
            return
        user = self.get_body_argument("user", "").strip()
        await self._log_in(user, lambda: self._checked(user, self.get_body_argument("password", "", strip=False)))

    async def _log_in(self, user: str, check: Callable[[], Awaitable[bool | None]]) -> None:
        """Log ``user`` in when their name passes and ``check`` says whether they are an admin (None: refused)."""
        problem = user_name_problem(user)
        if problem is not None:
            # One line, no cookie: a name like another user's group id must not log in at all.
            log.info("refused a login: %s", InvalidUserName(user, problem))
            self._page(f"That user name is refused: {problem}.", 400)
            return
        try:
            admin = await check()
            if admin is not None:
                await self._start(user, admin)
        except MoiError as error:
            log.warning("cannot log %s in: %s", printable(user), printable(error))
            self._page("The job store is unavailable; try again.", 503)

    async def _checked(self, user: str, password: str) -> bool | None:
        """Whether the user is an admin, once logged in; None (the page answered) when refused."""
        methods = connections.settings().login_methods
        if "password" not in methods:
            return False
        hub, address = hub_for(self.application), self.request.remote_ip or "?"
        scopes = login_throttle.scopes(user, address)
        wait = await login_throttle.wait_left(hub.redis, hub.keys, hub.url, list(scopes))
        if wait:
            log.info("refused a login for %s from %s: throttled", printable(user), printable(address))
            self._page(f"Too many failed logins; try again in {wait} s.", 429)
            return None
        account = await accounts.verify(hub.redis, hub.keys, hub.url, user, password)
        if account is not None:
            await login_throttle.succeeded(hub.redis, hub.keys, hub.url, user)
            return account.admin
        if "dev" in methods and not password and not await accounts.exists(hub.redis, hub.keys, hub.url, user):
            return False  # the development login, for a name with no account
        await login_throttle.failed(hub.redis, hub.keys, hub.url, scopes)
        log.info("failed login for %s from %s", printable(user), printable(address))
        self._page(WRONG, 401)
        return None

    async def _checked_proxy(self, user: str) -> bool:
        """A user the trusted proxy names: an admin when their account (if any) says so."""
        hub = hub_for(self.application)
        log.info("login for %s by the proxy at %s", printable(user), printable(self.request.remote_ip or "?"))
        return await accounts.is_admin_async(hub.redis, hub.keys, hub.url, user)

    async def _start(self, user: str, admin: bool) -> None:
        await start_login(self, user, admin)
        self.redirect(self._next())

    def _page(self, error: str | None, status: int = 200) -> None:
        self.set_status(status)
        methods = connections.settings().login_methods
        self.render(
            "login.html",
            error=error,
            next=self._next(),
            password="password" in methods,
            dev="dev" in methods,
            oidc=login_oidc_button(),
        )

    def _next(self) -> str:
        # strip=False: Tornado would trim the very whitespace that makes a target unsafe.
        return safe_next(self.get_query_argument("next", "/", strip=False))


async def start_login(handler: RequestHandler, user: str, admin: bool) -> None:
    """Set the login's cookies (and start its session, where the application keeps them: ``moi server``).

    Every login method ends here, once it has checked ``user`` (a name ``user_name_problem`` passes)."""
    hours = connections.settings().session_hours
    cookies = [("user", user)]
    if handler.settings.get(SESSIONS_SETTING):
        hub, seconds = hub_for(handler.application), max(1, round(hours * 3600))
        cookies.append((SESSION_COOKIE, await sessions.start(hub.redis, hub.keys, hub.url, user, admin, seconds)))
    for name, value in cookies:
        handler.set_signed_cookie(name, value, expires_days=hours / 24, httponly=True, samesite="Lax")


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
    page cannot log a user out. A GET is 405. It ends the session on the server too: the old cookie is no login."""

    async def post(self) -> None:
        session_id = self.get_signed_cookie(SESSION_COOKIE)
        if session_id:
            hub = hub_for(self.application)
            try:
                await sessions.end(hub.redis, hub.keys, hub.url, session_id.decode())
            except MoiError as error:
                log.warning("cannot end a session: %s", printable(error))
        self.clear_cookie("user")
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/login")
