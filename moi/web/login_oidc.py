"""The ``oidc`` login of ``moi server``: OpenID Connect's authorization code flow with PKCE.

``GET /login/oidc`` starts a login: a random ``state``, ``nonce`` and PKCE code verifier are
kept in Redis (``moi.storage.oidc_states``, minutes, single use), the state also in the signed
cookie ``moi_oidc`` (so the callback is taken only in the browser that started it: nobody can
log a victim into the attacker's account with a link), and the browser goes to the provider's
authorization endpoint with the S256 code challenge. ``GET /login/oidc/callback`` takes the
state's record (a replayed, forged or expired state finds none: 400), checks the cookie, trades
the code and the verifier for tokens at the token endpoint, checks the ID token
(``moi.web.oidc_client``: signature, issuer, audience, expiry, nonce) and logs in the user its
``[server] oidc_username_claim`` names, once ``moi.core.keys.user_name_problem`` passes it; a
``oidc_admin_claim`` (a list of groups) holding ``oidc_admin_group`` makes an admin, and nothing
else (``[moi] admins`` names no OpenID login: a provider's name is not this site's). The ``email``
claim counts only with ``email_verified`` true, and a name that is a password account's is refused
(the provider must not stand in for its owner). Every
refusal is a page with one line and a 4xx (503 when the provider cannot be reached), never a 500.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from tornado.web import HTTPError, RequestHandler

from moi.core.config import Settings
from moi.core.errors import MoiError
from moi.core.keys import user_name_problem
from moi.core.redact import printable
from moi.jobs import connections
from moi.relay.websocket import hub_for
from moi.storage import accounts, oidc_states
from moi.web.login import safe_next, secure_cookies, start_login
from moi.web.oidc_client import Client, OidcFailed, ProviderCache, exchange, verified_claims
from moi.web.proxy import client_address

log = logging.getLogger("moi.server")

STATE_COOKIE = "moi_oidc"
CALLBACK_PATH = "/login/oidc/callback"
CACHE_SETTING = "moi_oidc_provider"  # the application's ProviderCache, made on first use
STORE_DOWN = "The job store is unavailable; try again."


def provider_cache(handler: RequestHandler) -> ProviderCache:
    issuer = connections.settings().oidc_issuer
    cache = handler.application.settings.get(CACHE_SETTING)
    if not isinstance(cache, ProviderCache) or cache.issuer != issuer:
        cache = handler.application.settings[CACHE_SETTING] = ProviderCache(issuer)
    return cache


def callback_url(handler: RequestHandler) -> str:
    """Where the provider sends the browser back: under ``[moi] site_url`` when set (behind a proxy, the
    address users see), else this request's own scheme and host."""
    site = connections.settings().site_url.strip()
    base = site.rstrip("/") if site else f"{handler.request.protocol}://{handler.request.host}"
    return base + CALLBACK_PATH


class _OidcHandler(RequestHandler):
    def prepare(self) -> None:
        if "oidc" not in connections.settings().login_methods:
            raise HTTPError(404)

    def _request_summary(self) -> str:
        # Tornado's access log line, without the query: the callback's carries the code and the state.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def refuse(self, status: int, line: str) -> None:
        """The page of a login that cannot go on: its one line and a way back."""
        self.clear_cookie(STATE_COOKIE, path="/login/oidc")
        self.set_status(status)
        self.render("login_oidc_error.html", error=line)


class OidcStartHandler(_OidcHandler):
    async def get(self) -> None:
        try:
            provider = await provider_cache(self).provider()
            state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
            redirect_uri = callback_url(self)
            record = {"nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri, "next": self._next()}
            hub = hub_for(self.application)
            address = client_address(self.request)
            if not await oidc_states.keep(hub.redis, hub.keys, hub.url, state, record, address):
                self.refuse(429, "Too many logins are starting at once; try again in a minute.")
                return
        except OidcFailed as failed:
            self.refuse(failed.status, failed.line)
            return
        except MoiError as error:
            log.warning("cannot start an OpenID login: %s", printable(error))
            self.refuse(503, STORE_DOWN)
            return
        self._set_state_cookie(state)
        settings = connections.settings()
        query = {
            "response_type": "code",
            "client_id": settings.oidc_client_id,
            "redirect_uri": redirect_uri,
            "scope": settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        joiner = "&" if "?" in provider.authorization_endpoint else "?"
        self.redirect(provider.authorization_endpoint + joiner + urlencode(query))

    def _next(self) -> str:
        return safe_next(self.get_query_argument("next", "/", strip=False))

    def _set_state_cookie(self, state: str) -> None:
        days, secure = oidc_states.STATE_SECONDS / 86400, secure_cookies(self)
        self.set_signed_cookie(
            STATE_COOKIE, state, expires_days=days, path="/login/oidc", httponly=True, samesite="Lax", secure=secure
        )


class OidcCallbackHandler(_OidcHandler):
    async def get(self) -> None:
        state = self.get_query_argument("state", "")
        try:
            record = await self._record(state)
            if record is not None:
                user, admin = await self._user(record)
                await start_login(self, user, admin, method="oidc")
                self.clear_cookie(STATE_COOKIE, path="/login/oidc")
                log.info("OpenID login for %s%s", printable(user), " (admin)" if admin else "")
                self.redirect(safe_next(str(record.get("next", "/"))))
        except OidcFailed as failed:
            self.refuse(failed.status, failed.line)
        except MoiError as error:
            log.warning("cannot finish an OpenID login: %s", printable(error))
            self.refuse(503, STORE_DOWN)

    async def _record(self, state: str) -> dict[str, Any] | None:
        """The login's kept record, taken (once); None when the page was answered instead."""
        error = self.get_query_argument("error", "")
        hub = hub_for(self.application)
        record = await oidc_states.take(hub.redis, hub.keys, hub.url, state) if state else None
        if error:
            log.info("the OpenID provider refused a login: %s", printable(error, 60))
            self.refuse(401, f"The login provider refused the login ({printable(error, 60)}).")
            return None
        if record is None:
            self.refuse(400, "This login has expired or was already used; log in again.")
            return None
        cookie = self.get_signed_cookie(STATE_COOKIE, max_age_days=1)
        if cookie is None or not hmac.compare_digest(cookie, state.encode()):
            log.info("refused an OpenID callback: its state was not started in this browser")
            self.refuse(400, "This login was started in another browser or tab; log in again.")
            return None
        return record

    async def _user(self, record: dict[str, Any]) -> tuple[str, bool]:
        """The user the provider vouches for, and whether they are an admin; OidcFailed when refused."""
        code = self.get_query_argument("code", "")
        if not code:
            raise OidcFailed(400, "The login provider sent no code; log in again.")
        settings = connections.settings()
        cache = provider_cache(self)
        client = Client(settings.oidc_client_id, settings.oidc_client_secret)
        tokens = await exchange(await cache.provider(), client, code, str(record["verifier"]), record["redirect_uri"])
        claims = await verified_claims(cache, settings.oidc_client_id, tokens, str(record["nonce"]))
        name = login_name(claims, settings)
        hub = hub_for(self.application)
        if await accounts.exists(hub.redis, hub.keys, hub.url, name):
            log.info("refused an OpenID login for %s: a password account has that name", printable(name))
            raise OidcFailed(403, f"The name {name} belongs to a password account here: log in with its password.")
        return name, is_admin(claims, settings)


def login_name(claims: dict[str, Any], settings: Settings) -> str:
    """The name ``oidc_username_claim`` gives; OidcFailed (403) when it is missing or not a login name."""
    claim = settings.oidc_username_claim
    name = claims.get(claim)
    if claim == "email" and claims.get("email_verified") is not True:  # missing is unverified (nOAuth)
        raise OidcFailed(403, "Your e-mail address is not verified by the login provider.")
    if not isinstance(name, str):
        log.info("refused an OpenID login: the ID token has no %s claim", printable(claim))
        raise OidcFailed(403, f"The login provider did not give your {claim}; ask the administrator.")
    problem = user_name_problem(name)
    if problem is not None:
        log.info("refused an OpenID login for %s: %s", printable(name), problem)
        raise OidcFailed(403, f"That user name is refused: {problem}.")
    return name


def is_admin(claims: dict[str, Any], settings: Settings) -> bool:
    """Whether ``oidc_admin_claim`` (a list of groups, or one) holds ``oidc_admin_group``."""
    if not settings.oidc_admin_claim or not settings.oidc_admin_group:
        return False
    groups = claims.get(settings.oidc_admin_claim)
    if isinstance(groups, str):
        groups = [groups]
    return isinstance(groups, list) and settings.oidc_admin_group in groups


ROUTES = [(r"/login/oidc", OidcStartHandler), (r"/login/oidc/callback", OidcCallbackHandler)]
