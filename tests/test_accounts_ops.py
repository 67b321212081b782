"""The admins' accounts on the operations page and their API (``moi.web.api_accounts``): a real
``moi server`` with the password login, real Redis, real Chromium. One server for the module."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from moi.jobs import connections
from moi.storage import accounts, tokens
from moi.storage.redis_server import free_port
from tests.browser import Server, quiet
from tests.test_logins import PASSWORD, post_login

NEW_PASSWORD = "a brand new password 42"
ADDED_PASSWORD = "the added one's password"


@pytest.fixture(scope="module")
def accounts_server(redis_url: str) -> Iterator[Server]:
    """``moi -v server`` with only the password login; its stderr (the log) read by the last test."""
    server = Server(free_port(), command=("-m", "moi", "-v", "server"), env={**os.environ, "MOI_LOGINS": "password"})
    server.start()
    yield server
    server.stop()


def chromium_login(context: Any, server: Server, user: str, password: str, path: str) -> Any:
    page = context.new_page()
    page.goto(server.url + path)
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
    return page


def test_an_admin_manages_accounts_and_ends_logins_on_the_ops_page(
    r: Any, browser: Any, accounts_server: Server
) -> None:
    from playwright.sync_api import expect

    store = connections.store()
    accounts.add(store, "ada", PASSWORD, admin=True)
    admin_context, user_context = browser.new_context(), browser.new_context()
    try:
        page = chromium_login(admin_context, accounts_server, "ada", PASSWORD, "/ops")
        status = page.locator(".moi-accounts-status")
        with quiet(page):
            expect(page.locator('.moi-accounts tr[data-name="ada"]')).to_contain_text("admin")
            page.fill(".moi-account-add input[name=name]", "<b>bea</b>")  # a name that is markup: shown as text
            page.fill(".moi-account-add input[name=password]", ADDED_PASSWORD)
            page.click(".moi-account-add button")
            expect(status).to_have_text("added <b>bea</b>")
            bea = page.locator('.moi-accounts tr[data-name="<b>bea</b>"]')
            expect(bea.locator(".moi-account-name")).to_have_text("<b>bea</b>")
            assert page.locator(".moi-accounts b").count() == 0  # no markup made of it
            # The new user logs in with it in another browser; the admin sees their login counted.
            theirs = chromium_login(user_context, accounts_server, "<b>bea</b>", ADDED_PASSWORD, "/submit")
            page.reload()
            expect(bea.locator(".moi-account-sessions")).to_have_text("1")
            # A new password ends their open session: their next page is the login.
            bea.locator("input[type=password]").fill(NEW_PASSWORD)
            bea.locator(".moi-account-password button").click()
            expect(status).to_have_text("changed the password of <b>bea</b>; ended 1 login(s) of <b>bea</b>")
            theirs.goto(accounts_server.url + "/submit")
            theirs.wait_for_url("**/login**")
            # Their token, then "End sessions and tokens": it is refused.
            token = tokens.create(store, "<b>bea</b>")
            assert api(accounts_server, "GET", "/jobs", token).status_code == 200
            page.fill(".moi-account-logout input[name=name]", "<b>bea</b>")
            page.click(".moi-account-logout button")  # asks once more
            expect(page.locator(".moi-account-logout button")).to_contain_text("click again to confirm")
            page.click(".moi-account-logout button")
            expect(status).to_have_text("ended 0 login(s) and revoked 1 token(s) of <b>bea</b>")
            assert api(accounts_server, "GET", "/jobs", token).status_code == 401
            # Made an admin, then removed (a confirm step); the last admin account stays one.
            bea.locator(".moi-account-admin").click()
            expect(bea.locator("td").nth(1)).to_have_text("admin")
            bea.locator(".moi-account-remove").click()
            bea.locator(".moi-account-remove").click()
            expect(bea).to_have_count(0)
            # The admin ends their own logins: their page goes to the login.
            page.fill(".moi-account-logout input[name=name]", "ada")
            page.click(".moi-account-logout button")
            page.click(".moi-account-logout button")
            page.wait_for_url("**/login")
    finally:
        admin_context.close()
        user_context.close()


def api(server: Server, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, server.url + "/api/v1" + path, headers=headers, json=body)


ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/accounts", None),
    ("POST", "/accounts", {"name": "mallory", "password": PASSWORD, "admin": True}),
    ("POST", "/accounts/ada/password", {"password": PASSWORD}),
    ("POST", "/accounts/ada/admin", {"admin": False}),
    ("DELETE", "/accounts/ada", None),
    ("POST", "/users/ada/logout", None),
]


def test_only_admins_may_and_the_last_admin_account_stays(r: Any, accounts_server: Server) -> None:
    store = connections.store()
    accounts.add(store, "ada", PASSWORD, admin=True)
    accounts.add(store, "carl", PASSWORD)
    user_token, admin_token = tokens.create(store, "carl"), tokens.create(store, "root", admin=True)
    for method, path, body in ENDPOINTS:  # a non-admin's token and a non-admin's login: 403, nothing done
        assert api(accounts_server, method, path, user_token, body).status_code == 403, (method, path)
    with httpx.Client() as carl, httpx.Client() as ada:
        assert post_login(carl, accounts_server, "carl", PASSWORD).status_code == 302
        assert post_login(ada, accounts_server, "ada", PASSWORD).status_code == 302
        xsrf = {"X-XSRFToken": carl.cookies["_xsrf"]}
        for method, path, body in ENDPOINTS:
            answer = carl.request(method, accounts_server.url + "/api/v1" + path, json=body, headers=xsrf)
            assert answer.status_code == 403 and answer.json()["code"] == "forbidden", (method, path)
        # An admin's login without the XSRF token is refused too: a cross-site form cannot act.
        assert ada.post(accounts_server.url + "/api/v1/users/carl/logout").status_code == 403
        assert ada.get(accounts_server.url + "/api/v1/accounts").json()["accounts"][0] == {
            "name": "ada",
            "admin": True,
            "created": accounts.listed(store)[0].created,
            "sessions": 1,
        }
    assert accounts.is_admin(store, "ada") and len(accounts.listed(store)) == 2
    answers = {
        "demote the last": api(accounts_server, "POST", "/accounts/ada/admin", admin_token, {"admin": False}),
        "remove the last": api(accounts_server, "DELETE", "/accounts/ada", admin_token),
        "short": api(accounts_server, "POST", "/accounts", admin_token, {"name": "dan", "password": "short"}),
        "taken": api(accounts_server, "POST", "/accounts", admin_token, {"name": "carl", "password": PASSWORD}),
        "bad name": api(accounts_server, "POST", "/accounts", admin_token, {"name": "a:b", "password": PASSWORD}),
        "spaced": api(accounts_server, "POST", "/accounts", admin_token, {"name": " dan", "password": PASSWORD}),
        "no account": api(accounts_server, "POST", "/accounts/nobody/password", admin_token, {"password": PASSWORD}),
        "not a flag": api(accounts_server, "POST", "/accounts/carl/admin", admin_token, {"admin": "yes"}),
        "bad user": api(accounts_server, "POST", "/users/user-id-map/logout", admin_token),
    }
    statuses = {why: answer.status_code for why, answer in answers.items()}
    assert statuses == {
        "demote the last": 409,
        "remove the last": 409,
        "short": 422,
        "taken": 409,
        "bad name": 422,
        "spaced": 422,
        "no account": 404,
        "not a flag": 422,
        "bad user": 422,
    }
    assert "last admin account" in answers["remove the last"].json()["error"]
    assert all(PASSWORD not in answer.text and "short" not in answer.json()["error"] for answer in answers.values())
    # A user with no password account (pam, oidc, header): their tokens end all the same.
    pam_token = tokens.create(store, "pam user")
    ended = api(accounts_server, "POST", "/users/pam%20user/logout", admin_token).json()
    assert ended == {"name": "pam user", "sessions_ended": 0, "tokens_revoked": 1}
    assert api(accounts_server, "GET", "/jobs", pam_token).status_code == 401
    # Another admin account made: now the first may be demoted, and that revokes its admin tokens.
    assert (
        api(
            accounts_server, "POST", "/accounts", admin_token, {"name": "eve", "password": PASSWORD, "admin": True}
        ).status_code
        == 201
    )
    ada_admin_token = tokens.create(store, "ada", admin=True)
    demoted = api(accounts_server, "POST", "/accounts/ada/admin", admin_token, {"admin": False}).json()
    assert demoted == {"name": "ada", "admin": False, "sessions_ended": 1, "tokens_revoked": 1}
    assert api(accounts_server, "GET", "/accounts", ada_admin_token).status_code == 401
    assert api(accounts_server, "DELETE", "/accounts/carl", admin_token).status_code == 204
    assert api(accounts_server, "GET", "/jobs", user_token).status_code == 401  # removed: its tokens end
    assert [account.name for account in accounts.listed(store)] == ["ada", "eve"]


def test_no_password_reaches_the_servers_log(accounts_server: Server) -> None:
    """Last: it stops the module's server to read all it logged."""
    proc = accounts_server.proc
    assert proc is not None and proc.stderr is not None
    proc.terminate()
    logged = proc.communicate(timeout=60)[1]
    accounts_server.proc = None
    assert re.search(r"40[39] (POST|DELETE) /api/v1/accounts", logged)  # the log was captured, with the refusals
    for password in (PASSWORD, NEW_PASSWORD, ADDED_PASSWORD):
        assert password not in logged
