"""The oidc login of ``moi server`` against a real OpenID provider (``tests.oidc_provider``: authlib's
server side on Flask): discovery, the code flow with PKCE, state, nonce and the ID token's signature,
the claim that names the login and the group that makes admins, and each refusal's page.
One provider and one ``moi server`` for the module; the last test stops both."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

import moi.jobs.connections
from moi.core.config import build_settings
from moi.core.errors import ConfigError
from moi.core.keys import Keys
from moi.storage import accounts, oidc_states
from moi.storage.redis_server import free_port
from moi.web.login_oidc import login_name
from moi.web.oidc_client import OidcFailed, ProviderCache
from tests.browser import Server, quiet
from tests.oidc_provider import ADMIN_GROUP, CLIENT_ID, CLIENT_SECRET, Provider
from tests.test_logins import PASSWORD


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    started = Provider(free_port())
    started.start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def oidc_server(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``moi -v server`` with only the oidc login, registered at ``provider``; its log kept for the last test."""
    config = tmp_path_factory.mktemp("oidc") / "moi.ini"
    config.write_text(
        "[server]\nlogins = oidc\n"
        f"oidc_issuer = {provider.issuer}\noidc_client_id = {CLIENT_ID}\noidc_client_secret = {CLIENT_SECRET}\n"
        f"oidc_name = Test Provider\noidc_admin_claim = groups\noidc_admin_group = {ADMIN_GROUP}\n"
        "[moi]\nadmins = carol\n"  # names no OpenID login: carol stays a plain user
    )
    env = {**os.environ, "MOI_CONFIG_FP": str(config)}
    server = Server(free_port(), command=("-m", "moi", "-v", "server"), env=env)
    provider.client.redirect_uris = [server.url + "/login/oidc/callback"]
    server.start()
    yield server
    server.stop()


def error_line(response: httpx.Response) -> str:
    found = re.search(r'id="moi-login-error"[^>]*>([^<]*)<', response.text)
    return found.group(1) if found else ""


def at_provider(client: httpx.Client, server: Server, next_page: str = "/") -> httpx.Response:
    """Start a login at moi and follow it to the provider's page (its URL carries the state)."""
    answer = client.get(f"{server.url}/login/oidc?next={next_page}", follow_redirects=True)
    assert answer.status_code == 200 and "provider" in answer.text, answer.text
    return answer


def choose(client: httpx.Client, provider_page: httpx.Response, **form: str) -> httpx.Response:
    """Answer the provider's page (a user, or deny) and return its redirect back to moi, not yet followed."""
    answer = client.post(str(provider_page.url), data=form)
    assert answer.status_code == 302, answer.text
    return answer


def test_chromium_logs_in_through_the_provider_as_the_claims_user(browser: Any, oidc_server: Server) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        page = context.new_page()
        callbacks: list[str] = []
        page.on("request", lambda req: callbacks.append(req.url) if "/login/oidc/callback" in req.url else None)
        with quiet(page):
            page.goto(oidc_server.url + "/")  # -> /login?next=%2F
            assert page.locator("input[name=user]").count() == 0  # no form: oidc is the only method
            page.click("#moi-login-oidc")
            page.click("button[value=carol]")  # the provider's page
            expect(page.locator("#moi-user").first).to_have_text("carol")
            assert urlsplit(page.url).path == "/"
        # The callback's URL again, in the same browser: its state was used once.
        replay = page.goto(callbacks[-1])
        assert replay is not None and replay.status == 400
        expect(page.locator("#moi-login-error")).to_contain_text("expired or was already used")
        assert context.request.get(oidc_server.url + "/ops").status == 403  # not in the group; [moi] admins is not

        # An admin-group user, in a fresh browser context: sees /ops.
        admin = browser.new_context()
        admin_page = admin.new_page()
        with quiet(admin_page):
            admin_page.goto(oidc_server.url + "/login?next=/ops")
            expect(admin_page.locator("#moi-login-oidc")).to_have_text("Log in with Test Provider")
            admin_page.click("#moi-login-oidc")
            admin_page.click("button[value=dave]")
            admin_page.wait_for_url("**/ops")
            expect(admin_page.locator("#moi-user").first).to_have_text("dave")
        admin.close()
    finally:
        context.close()


def test_each_refusal_is_a_clear_page_and_no_login(oidc_server: Server, provider: Provider) -> None:
    with httpx.Client() as client:
        denied = client.get(choose(client, at_provider(client, oidc_server), deny="1").headers["Location"])
        assert denied.status_code == 401 and "access_denied" in error_line(denied)
        state = parse_qs(urlsplit(str(at_provider(client, oidc_server).url)).query)["state"][0]
        no_code = client.get(f"{oidc_server.url}/login/oidc/callback?state={state}")
        assert no_code.status_code == 400 and "no code" in error_line(no_code)
        for state in ("forged", "s" * 10_000):
            forged = client.get(f"{oidc_server.url}/login/oidc/callback", params={"state": state, "code": "x"})
            assert forged.status_code == 400 and "expired or was already used" in error_line(forged)
        refused_name = client.get(choose(client, at_provider(client, oidc_server), user="moiroot").headers["Location"])
        assert refused_name.status_code == 403 and "refused" in error_line(refused_name)
        accounts.add(moi.jobs.connections.store(), "erin", PASSWORD)
        try:  # the provider cannot stand in for a password account's owner
            taken = client.get(choose(client, at_provider(client, oidc_server), user="erin").headers["Location"])
        finally:
            accounts.remove(moi.jobs.connections.store(), "erin")
        assert taken.status_code == 403 and "belongs to a password account" in error_line(taken)
        tampered = client.get(choose(client, at_provider(client, oidc_server), user="mallory").headers["Location"])
        assert tampered.status_code == 401 and "could not be verified" in error_line(tampered)
        assert "moi_session" not in client.cookies and client.get(oidc_server.url + "/api/v1/jobs").status_code == 401
        # A callback started in another browser (an attacker's own login, sent to a victim) logs nobody in.
        attackers = choose(client, at_provider(client, oidc_server), user="carol").headers["Location"]
    with httpx.Client() as victim:
        fixed = victim.get(attackers)
        assert fixed.status_code == 400 and "another browser" in error_line(fixed)
        assert "moi_session" not in victim.cookies


def test_settings_are_checked_and_an_unreachable_issuer_is_a_503(caplog: pytest.LogCaptureFixture) -> None:
    usable = {"logins": "oidc", "oidc_issuer": "https://login.example.org", "oidc_client_id": "moi"}
    for wrong, setting in (
        ({"oidc_issuer": "http://login.example.org"}, "oidc_issuer"),
        ({"oidc_client_id": ""}, "oidc_client_id"),
        ({"oidc_scopes": "profile"}, "oidc_scopes"),
        ({"oidc_admin_claim": "groups"}, "oidc_admin_group"),
    ):
        with pytest.raises(ConfigError, match=setting):
            build_settings(usable | wrong)
    settings = build_settings(usable)
    assert settings.oidc_username_claim == "preferred_username" and "s3cret" not in repr(settings)
    by_email = build_settings(usable | {"oidc_username_claim": "email"})
    for unverified in ({}, {"email_verified": "true"}, {"email_verified": False}):  # missing is not verified
        with pytest.raises(OidcFailed, match="not verified"):
            login_name({"email": "boss@example.org", **unverified}, by_email)
    assert login_name({"email": "boss@example.org", "email_verified": True}, by_email) == "boss@example.org"
    secret = build_settings({"oidc_client_secret": CLIENT_SECRET})
    assert CLIENT_SECRET not in repr(secret)
    cache = ProviderCache(f"http://127.0.0.1:{free_port()}")

    async def twice() -> list[int]:
        statuses = []
        for _ in range(2):
            try:
                await cache.provider()
            except OidcFailed as failed:
                statuses.append(failed.status)
        return statuses

    with ThreadPoolExecutor(1) as pool:  # the module's playwright loop runs in this thread
        assert pool.submit(asyncio.run, twice()).result(timeout=60) == [503, 503]
    assert len([record for record in caplog.records if "unusable" in record.getMessage()]) == 1  # one line


def test_an_unreachable_provider_is_a_503_and_no_secret_is_logged(oidc_server: Server, provider: Provider) -> None:
    """Last: it stops the module's provider, then its server to read all it logged."""
    with httpx.Client() as client:
        page = at_provider(client, oidc_server)
        approved = choose(client, page, user="carol").headers["Location"]
        flood_of_starts(oidc_server)
        provider.stop()
        down = client.get(approved)
        assert down.status_code == 503 and "cannot be reached" in error_line(down)
    code = parse_qs(urlsplit(approved).query)["code"][0]
    proc = oidc_server.proc
    assert proc is not None and proc.stderr is not None
    proc.terminate()
    logged = proc.communicate(timeout=60)[1]
    oidc_server.proc = None
    assert "OpenID login for carol" in logged and "token endpoint unreachable" in logged
    assert CLIENT_SECRET not in logged and code not in logged and "eyJ" not in logged  # no secret, code, JWT


def flood_of_starts(server: Server) -> None:
    """Starts are capped per address; the refused ones count against it only, not everyone's minute."""
    everyone = Keys().oidc_started(int(time.time() // 60))
    store = moi.jobs.connections.store()
    before = int(store.redis.get(everyone) or 0)
    with httpx.Client() as flooder:
        answers = [flooder.get(f"{server.url}/login/oidc") for _ in range(oidc_states.STARTS_PER_ADDRESS + 1)]
    if everyone != Keys().oidc_started(int(time.time() // 60)):
        return  # a minute turned: its counts started afresh
    assert answers[-1].status_code == 429 and "Too many logins" in error_line(answers[-1])
    started = sum(answer.status_code == 302 for answer in answers)
    assert int(store.redis.get(everyone) or 0) - before == started < len(answers)
