"""``/login`` and ``/logout`` of ``moi server``: the login methods of ``[server] logins``.

``dev``: any name, no password (anyone who reaches the server is anyone; loopback only,
unless ``--insecure-dev-login-anywhere``). ``password``: an account of ``moi user add`` and
its password (``moi.storage.accounts``). ``pam``: an account of this machine (``moi.web.pam_check``).
``header``: the user a trusted proxy names in ``[server] login_header``, read on ``GET /login``
(``moi.web.proxy``: from ``[server] trusted_proxies`` only, once, with ``proxy_secret`` when set).
The form's checks, their throttle and their bounded threads: ``moi.web.login_checks``. Names
``moi.core.keys.user_name_problem`` refuses never log in. A wrong password and an unknown name
get the same answer (401, the same line), after the same work. A password is never logged nor
shown. Each login is a session (``moi.storage.sessions``): its id in the signed cookie
``moi_session`` beside ``user`` (``Secure`` unless on loopback, ``[server] secure_cookies``);
logging out ends it. A proxy's login keeps the session its browser has, if live.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.web import RequestHandler

from moi.core.errors import InvalidUserName, MoiError
from moi.core.keys import user_name_problem
from moi.core.redact import printable
from moi.jobs import connections
from moi.relay.session_check import SESSION_COOKIE, SESSIONS_SETTING
from moi.relay.websocket import cookie_user, hub_for
from moi.storage import accounts, sessions
from moi.web.login_checks import REAL_METHODS, Checked, checked_login, dev_login, wrong_answer
from moi.web.oidc_button import login_oidc_button
from moi.web.proxy import PROXY_ONLY, client_address, limited, proxy_login

log = logging.getLogger("moi.server")

SECURE_SETTING = "moi_secure_cookies"  # the application's: its login cookies are Secure (HTTPS only)
FORM_METHODS = REAL_METHODS | {"dev"}


class _UserHandler(RequestHandler):
    def get_current_user(self) -> Any:
        return cookie_user(self.get_signed_cookie("user"))


class LoginHandler(_UserHandler):
    async def get(self) -> None:
        methods = connections.settings().login_methods
        found = proxy_login(self.request) if "header" in methods else None
        if found is not None and found.refusal:
            self._page(found.refusal, found.status)
        elif found is not None and found.user is not None:
            user = found.user
            await self._log_in(user, lambda: self._checked_proxy(user))
        elif not methods & (FORM_METHODS | {"oidc"}):
            self._page(PROXY_ONLY, 401)
        else:
            self._page(None)

    async def post(self) -> None:
        if not connections.settings().login_methods & FORM_METHODS:
            self._page(PROXY_ONLY, 403)
            return
        user = self.get_body_argument("user", "").strip()
        await self._log_in(user, lambda: self._checked(user, self.get_body_argument("password", "", strip=False)))

    async def _log_in(self, user: str, check: Callable[[], Awaitable[bool | None]]) -> None:
        """Log ``user`` in when their name passes and ``check`` says whether they are an admin (None: answered)."""
        problem = user_name_problem(user)
        if problem is not None:
            # One line, no cookie: a name like another user's group id must not log in at all.
            limited.info("refused a login: %s", InvalidUserName(user, problem))
            self._page(f"That user name is refused: {problem}.", 400)
            return
        try:
            admin = await check()
            if admin is not None:
                await start_login(self, user, admin)
                self.redirect(self._next())
        except MoiError as error:
            log.warning("cannot log %s in: %s", printable(user), printable(error))
            self._page("The job store is unavailable; try again.", 503)

    async def _checked(self, user: str, password: str) -> bool | None:
        """Whether the user is an admin, once logged in; None (the page answered) when refused."""
        hub, methods = hub_for(self.application), connections.settings().login_methods
        if await dev_login(hub, user, password, methods):
            return False
        verdict = Checked(None, wrong_answer(methods))
        if methods & REAL_METHODS:
            verdict = await checked_login(hub, user, password, client_address(self.request))
        if verdict.admin is None:
            self._page(verdict.refusal, verdict.status)
        return verdict.admin

    async def _checked_proxy(self, user: str) -> bool | None:
        """A user the trusted proxy names: an admin when their account (if any) says so. A browser
        with a live session of theirs keeps it (None: answered): a proxy's every visit makes none."""
        hub = hub_for(self.application)
        session_id = self.get_signed_cookie(SESSION_COOKIE)
        if session_id and await sessions.reuse(hub.redis, hub.keys, hub.url, session_id.decode(), user):
            self.redirect(self._next())
            return None
        limited.info("login for %s by the proxy at %s", printable(user), printable(self.request.remote_ip or "?"))
        return await accounts.is_admin_async(hub.redis, hub.keys, hub.url, user)

    def _page(self, error: str | None, status: int = 200) -> None:
        self.set_status(status)
        methods = connections.settings().login_methods
        password = bool(methods & REAL_METHODS)
        self.render(
            "login.html",
            error=error,
            next=self._next(),
            password=password,
            dev="dev" in methods,
            oidc=login_oidc_button(),
        )

    def _next(self) -> str:
        # strip=False: Tornado would trim the very whitespace that makes a target unsafe.
        return safe_next(self.get_query_argument("next", "/", strip=False))


async def start_login(handler: RequestHandler, user: str, admin: bool, method: str = "") -> None:
    """Set the login's cookies (and start its session, where the application keeps them: ``moi server``).

    Every login method ends here, once it has checked ``user`` (a name ``user_name_problem`` passes)."""
    hours = connections.settings().session_hours
    cookies = [("user", user)]
    if handler.settings.get(SESSIONS_SETTING):
        hub, seconds = hub_for(handler.application), max(1, round(hours * 3600))
        cookies.append(
            (SESSION_COOKIE, await sessions.start(hub.redis, hub.keys, hub.url, user, admin, seconds, method))
        )
    for name, value in cookies:
        handler.set_signed_cookie(
            name, value, expires_days=hours / 24, httponly=True, samesite="Lax", secure=secure_cookies(handler)
        )


def secure_cookies(handler: RequestHandler) -> bool:
    """Whether login cookies are sent over HTTPS only: the application says (``moi server``: by
    ``[server] secure_cookies``, and for auto whether it listens beyond loopback)."""
    return bool(handler.settings.get(SECURE_SETTING, False))


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
