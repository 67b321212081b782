"""moi as an OpenID Connect client: the provider's discovery, its keys, the code's exchange, the ID token's checks.

Everything moi reads from the provider comes over https (plain http only to loopback,
``moi.core.oidc_settings``), with a timeout, without following redirects. The discovery
document and the keys (JWKS) are cached per application; a failure is cached for
``FAILURE_SECONDS`` too, so a flood of anonymous logins cannot make moi hammer an unreachable
provider (nor fill the log: one line per failure). The ID token is checked with authlib and
joserfc: its signature by the provider's keys (asymmetric algorithms only: ``none`` and the
HMAC ones, keyed by the client secret, are refused), its issuer, audience, expiry, nonce and
``at_hash``. No token, code or secret is ever logged or shown; a failure is an ``OidcFailed``
carrying the page's status and line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from moi.core.errors import MoiError
from moi.core.oidc_settings import issuer_problem
from moi.core.redact import printable

log = logging.getLogger("moi.server")

TIMEOUT = 10.0  # seconds of one request to the provider
CACHE_SECONDS = 3600  # how long the discovery document and keys are used before being read again
FAILURE_SECONDS = 10  # how long a failure to reach the provider is answered without trying again
LEEWAY = 60  # seconds of clock skew allowed on the ID token's times
SIGNING = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")
UNAVAILABLE = "The login provider cannot be reached; try again later."
REFUSED = "The login provider's answer could not be verified; log in again."


class OidcFailed(MoiError):
    """An OpenID login that cannot go on: ``status`` and ``line`` are the page's (no secret in either)."""

    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status = status
        self.line = line


@dataclass(frozen=True)
class Provider:
    """What moi uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]
    basic_auth: bool  # client_secret_basic (the default), else client_secret_post

    @classmethod
    def of(cls, document: dict[str, Any], issuer: str) -> Provider:
        if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
            raise ValueError("its issuer is not the configured one")
        authorize, token, jwks = (str(document.get(name, "")) for name in ENDPOINTS)
        if any(issuer_problem(endpoint) for endpoint in (authorize, token, jwks)):
            raise ValueError("an endpoint is missing or not https")
        offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(alg for alg in offered if alg in SIGNING)
        if not algorithms:
            raise ValueError("it signs ID tokens with no asymmetric algorithm")
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        basic = "client_secret_basic" in methods or "client_secret_post" not in methods
        return cls(str(document["issuer"]), authorize, token, jwks, algorithms, basic)


async def _get_json(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    return document


class ProviderCache:
    """One application's view of its provider: discovery and keys, cached, and failures remembered a while."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._provider: Provider | None = None
        self._keys: KeySet | None = None
        self._fresh_until = 0.0
        self._failed_until = 0.0
        self._lock = asyncio.Lock()  # one fetch at a time: a burst of logins makes one request

    async def provider(self) -> Provider:
        """The provider's endpoints; OidcFailed (503) when it cannot be reached or its document is unusable."""
        async with self._lock:
            if self._provider is None or time.monotonic() > self._fresh_until:
                await self._refresh(with_keys=False)
            assert self._provider is not None
            return self._provider

    async def keys(self, refresh: bool = False) -> KeySet:
        """The provider's signing keys (read again when ``refresh``: a key it has rotated in)."""
        async with self._lock:
            if self._keys is None or refresh or time.monotonic() > self._fresh_until:
                await self._refresh(with_keys=True)
            assert self._keys is not None
            return self._keys

    async def _refresh(self, with_keys: bool) -> None:
        if time.monotonic() < self._failed_until:
            raise OidcFailed(503, UNAVAILABLE)
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        fresh = self._provider is not None and time.monotonic() <= self._fresh_until
        try:
            provider = self._provider if fresh and self._provider else Provider.of(await _get_json(url), self.issuer)
            keys = await _key_set(provider) if with_keys else self._keys if fresh else None  # new document, new keys
        except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as error:
            self._failed_until = time.monotonic() + FAILURE_SECONDS
            log.warning("OpenID provider %s unusable: %s", printable(url), printable(_reason(error)))
            raise OidcFailed(503, UNAVAILABLE) from None
        if not fresh:
            self._fresh_until = time.monotonic() + CACHE_SECONDS
        self._provider, self._keys = provider, keys


async def _key_set(provider: Provider) -> KeySet:
    return KeySet.import_key_set(await _get_json(provider.jwks_uri))  # type: ignore[arg-type]


def _reason(error: Exception) -> str:
    """Why a request failed, without its body (which could hold anything the provider sent)."""
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class Client:
    """This server at the provider: its client id and secret (empty for a public client, which PKCE covers)."""

    client_id: str
    secret: str

    def __repr__(self) -> str:  # never the secret
        return f"Client({self.client_id!r})"


async def exchange(provider: Provider, client: Client, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
    """The token endpoint's answer for ``code`` (its ``id_token`` and ``access_token``); OidcFailed otherwise."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    auth: httpx.BasicAuth | None = None
    if client.secret and provider.basic_auth:  # RFC 6749 2.3.1: both form-encoded, then Basic
        auth = httpx.BasicAuth(quote(client.client_id, safe=""), quote(client.secret, safe=""))
    else:
        form.update({"client_id": client.client_id, **({"client_secret": client.secret} if client.secret else {})})
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as http:
            response = await http.post(provider.token_endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
        answer = response.json() if response.content else {}
    except (httpx.HTTPError, ValueError) as error:
        log.warning("OpenID token endpoint unreachable: %s", printable(_reason(error)))
        raise OidcFailed(503, UNAVAILABLE) from None
    if response.status_code != 200 or not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
        error_code = answer.get("error", "") if isinstance(answer, dict) else ""
        log.info("OpenID token endpoint refused a code: HTTP %d %s", response.status_code, printable(error_code, 60))
        raise OidcFailed(401, "The login provider did not accept this login; log in again.")
    return answer


async def verified_claims(cache: ProviderCache, client_id: str, tokens: dict[str, Any], nonce: str) -> dict[str, Any]:
    """The ID token's claims once its signature, issuer, audience, times and nonce are checked; OidcFailed otherwise."""
    provider = await cache.provider()
    try:
        decoded = await _decoded(cache, provider, tokens["id_token"])
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            options={
                "iss": {"essential": True, "value": provider.issuer},
                "aud": {"essential": True, "value": client_id},
            },
            params={"nonce": nonce, "client_id": client_id, "access_token": tokens.get("access_token")},
        )
        claims.validate(leeway=LEEWAY)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        log.warning("refused an OpenID login: its ID token failed a check: %s", printable(type(error).__name__))
        raise OidcFailed(401, REFUSED) from None
    return dict(claims)


async def _decoded(cache: ProviderCache, provider: Provider, id_token: str) -> jwt.Token:
    """The token, its signature checked by the provider's keys (read again once for a key id they lack)."""
    keys = await cache.keys()
    header_kid = _kid(id_token)
    if header_kid is not None and not any(key.kid == header_kid for key in keys.keys):
        keys = await cache.keys(refresh=True)
    return jwt.decode(id_token, keys, algorithms=list(provider.algorithms))


def _kid(id_token: str) -> str | None:
    from joserfc.jws import extract_compact

    try:
        kid = extract_compact(id_token.encode()).headers().get("kid")
    except (JoseError, ValueError):
        return None
    return kid if isinstance(kid, str) else None
