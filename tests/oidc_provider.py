"""A real OpenID provider for the oidc login's tests: authlib's server side on Flask, in a thread.

Discovery, a JWKS with an RS256 key made at start, an authorization endpoint whose page lists
the users (a button each: that user approves) and a "Deny" button, and a token endpoint that
checks the client secret, the PKCE verifier (S256 only) and the redirect URI, and signs the
ID token with the nonce. The user ``mallory`` gets an ID token signed by a key the JWKS does not
hold (same key id): a tampered token, which moi must refuse.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

CLIENT_ID = "moi-test"
CLIENT_SECRET = "s3cret-of-the-client-" + "x" * 8
ADMIN_GROUP = "moi-admins"
# name -> the claims the provider gives about them
USERS: dict[str, dict[str, Any]] = {
    "carol": {"preferred_username": "carol", "email": "carol@example.org", "groups": ["staff"]},
    "dave": {"preferred_username": "dave", "email": "dave@example.org", "groups": ["staff", ADMIN_GROUP]},
    "moiroot": {"preferred_username": "moi:root", "groups": []},  # a name moi refuses
    "mallory": {"preferred_username": "mallory", "groups": [ADMIN_GROUP]},  # gets a forged ID token
    "erin": {"preferred_username": "erin", "groups": []},  # a password account's name too
}


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    redirect_uris: list[str] = field(default_factory=list)

    def get_client_id(self) -> str:
        return CLIENT_ID

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(word for word in scope.split() if word in ("openid", "profile", "email", "groups"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, CLIENT_SECRET)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    user: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class Provider:
    """The provider's state and its Flask app; ``start()`` serves it on 127.0.0.1:``port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
        self.rogue = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
        self.client = Client()
        self.codes: dict[str, Code] = {}
        self.app = self._app()
        self._server: Any = None

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _app(self) -> Flask:
        app = Flask("oidc-test-provider")
        server = AuthorizationServer(app, query_client=self._query_client, save_token=lambda token, req: None)
        server.register_grant(self._code_grant(), [self._openid_code(), CodeChallenge(required=True)])
        app.add_url_rule("/.well-known/openid-configuration", view_func=self._discovery)
        app.add_url_rule("/jwks", "jwks", lambda: jsonify(KeySet([self.key]).as_dict(private=False)))
        app.add_url_rule("/authorize", "authorize", lambda: self._authorize(server), methods=["GET", "POST"])
        app.add_url_rule("/token", "token", server.create_token_response, methods=["POST"])
        return app

    def _query_client(self, client_id: str) -> Client | None:
        return self.client if client_id == CLIENT_ID else None

    def _discovery(self) -> Any:
        return jsonify(
            issuer=self.issuer,
            authorization_endpoint=self.issuer + "/authorize",
            token_endpoint=self.issuer + "/token",
            jwks_uri=self.issuer + "/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            token_endpoint_auth_methods_supported=["client_secret_basic"],
            code_challenge_methods_supported=["S256"],
        )

    def _authorize(self, server: AuthorizationServer) -> Any:
        if request.method == "GET":
            server.get_consent_grant(end_user=None)  # an invalid request is refused before any page
            buttons = "".join(f'<button name="user" value="{escape(name)}">{escape(name)}</button>' for name in USERS)
            deny = '<button name="deny" value="1">Deny</button>'
            head = '<!DOCTYPE html><title>provider</title><link rel="icon" href="data:,">'
            return f'{head}<form method="post">{buttons}{deny}</form>'
        user = request.form.get("user")
        return server.create_authorization_response(grant_user=user if user in USERS else None)

    def _code_grant(self) -> type[AuthorizationCodeGrant]:
        provider = self

        class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                payload = req.payload
                provider.codes[code] = Code(
                    code,
                    req.user,
                    payload.redirect_uri,
                    payload.scope,
                    payload.data.get("nonce"),
                    payload.data.get("code_challenge"),
                    payload.data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                return provider.codes.get(code)

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> str:
                return authorization_code.user

        return CodeGrant

    def _openid_code(self) -> OpenIDCode:
        provider = self

        class Code(OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(code.nonce == nonce for code in provider.codes.values())

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return provider.key

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [CLIENT_ID]}

            def encode_id_token(self, token: dict[str, Any], req: Any) -> str:
                signed: str = super().encode_id_token(token, req)
                if req.user == "mallory":  # the same claims, signed by a key that is not the provider's
                    provider.key, key = provider.rogue, provider.key
                    try:
                        signed = super().encode_id_token(token, req)
                    finally:
                        provider.key = key
                return signed

            def generate_user_info(self, user: str, scope: str) -> UserInfo:
                return UserInfo(sub=f"sub-{user}", **USERS[user])

        return Code(require_nonce=True)
