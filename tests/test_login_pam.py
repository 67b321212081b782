"""The ``pam`` login (``[server] logins = pam``) against a real Unix account made with ``useradd``,
in Chromium: a wrong password refused, the right one logged in (an admin by ``[moi] admins``), and
the account locked (``usermod -L``) refused with the right password. Root only (``useradd``); in
CI (``CI=true``) it must run, so there a missing root fails instead of skipping."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from moi.storage.redis_server import free_port
from tests.browser import Server

UNIX_PASSWORD = "Pam-login-" + secrets.token_hex(8)


@pytest.fixture
def unix_user() -> Iterator[str]:
    """A throwaway account of this machine with ``UNIX_PASSWORD``, deleted (with its home) after the test."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the pam login's test makes a Unix account: run it as root")
        pytest.skip("the pam login's test makes a Unix account: root only")
    name = f"moitest{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{UNIX_PASSWORD}\n", text=True, check=True)
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def log_in(page: Any, server: Server, user: str, password: str) -> int:
    """The form filled and sent; the status of the page it answered with (after any redirect)."""
    page.goto(server.url + "/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    with page.expect_response(lambda response: response.request.method == "POST") as answer:
        page.click("button[type=submit]")
    return int(answer.value.status)


def test_chromium_logs_in_a_unix_account_and_refuses_it_wrong_or_locked(r: Any, browser: Any, unix_user: str) -> None:
    from playwright.sync_api import expect

    env = {**os.environ, "MOI_LOGINS": "pam", "MOI_ADMINS": unix_user}
    server = Server(free_port(), command=("-m", "moi", "-v", "server"), env=env)
    server.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        assert log_in(page, server, unix_user, "not-" + UNIX_PASSWORD) == 401
        expect(page.locator("#moi-login-error")).to_have_text("Wrong user name or password, or a locked account.")
        assert page.locator("input[name=password]").count() == 1  # the form shows the password field
        assert log_in(page, server, unix_user, UNIX_PASSWORD) == 302
        expect(page.locator("#moi-jobs")).to_have_attribute("data-connected", "true")
        assert page.goto(server.url + "/ops").status == 200  # an admin: named in [moi] admins
        page.click(".moi-logout button")
        page.wait_for_url("**/login")
        subprocess.run(["usermod", "--lock", unix_user], check=True)
        assert log_in(page, server, unix_user, UNIX_PASSWORD) == 401
        expect(page.locator("#moi-login-error")).to_have_text("Wrong user name or password, or a locked account.")
        assert not any(cookie["name"] == "moi_session" for cookie in context.cookies())
    finally:
        context.close()
        assert server.proc is not None and server.proc.stderr is not None
        server.proc.terminate()
        logged = server.proc.communicate(timeout=60)[1]
        server.proc = None
    assert f"failed login for {unix_user}" in logged and UNIX_PASSWORD not in logged
