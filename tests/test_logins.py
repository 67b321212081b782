"""The password login of ``moi server`` (``[server] logins = password``), its accounts (``moi user``),
its throttling, and its sessions revoked on the server's side. One server for the module."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

import moi.jobs.connections
from moi.core.config import build_settings
from moi.core.errors import ConfigError
from moi.storage.redis_server import free_port
from moi.web.server import bind_allowed
from tests.browser import Server
from tests.conftest import ROOT, run_moi

PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "wrong horse battery staple"


@pytest.fixture(scope="module")
def password_server(redis_url: str) -> Iterator[Server]:
    """``moi -v server`` with only the password login; its stderr (the log) kept for the last test."""
    import os

    server = Server(free_port(), command=("-m", "moi", "-v", "server"), env={**os.environ, "MOI_LOGINS": "password"})
    server.start()
    yield server
    server.stop()


def moi_stdin(*args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    """``moi ARGS`` with ``password`` on its stdin, as a script gives it."""
    return subprocess.run(
        [sys.executable, "-m", "moi", *args],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def add_user(name: str, *extra: str) -> None:
    done = moi_stdin("user", "add", name, "--password-stdin", *extra)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def post_login(client: httpx.Client, server: Server, user: str, password: str) -> httpx.Response:
    client.get(server.url + "/login")  # the _xsrf cookie
    form = {"user": user, "password": password, "_xsrf": client.cookies["_xsrf"]}
    return client.post(server.url + "/login", data=form)


def error_line(response: httpx.Response) -> str:
    found = re.search(r'id="moi-login-error"[^>]*>([^<]*)<', response.text)
    return found.group(1) if found else ""


def test_chromium_logs_in_with_an_account_and_logs_out(r: Any, browser: Any, password_server: Server) -> None:
    from playwright.sync_api import expect

    add_user("alice")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(password_server.url + "/list")
        assert "Development login" not in page.content()
        page.fill("input[name=user]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("#moi-jobs")).to_have_attribute("data-connected", "true")
        old = {cookie["name"]: cookie["value"] for cookie in context.cookies()}
        page.click(".moi-logout button")
        page.wait_for_url("**/login")
    finally:
        context.close()
    # The cookie of the ended session is no login: a page goes to /login, the socket and the API are refused.
    with httpx.Client(cookies=old) as client:
        answer = client.get(password_server.url + "/")
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")
        assert client.get(password_server.url + "/api/v1/jobs").status_code == 401
    assert socket_status(password_server, old) == 403


def test_chromium_is_throttled_after_wrong_passwords_and_refused_a_header(
    r: Any, browser: Any, password_server: Server
) -> None:
    """In the browser: three wrong passwords, then even the right one waits; a proxy's user header from
    this address (not a trusted proxy, and the header method off) logs no one in."""
    from playwright.sync_api import expect

    add_user("ines")
    context = browser.new_context(extra_http_headers={"X-Remote-User": "ines"})
    try:
        page = context.new_page()  # not quiet: a 401 and a 429 are this test's answers
        page.goto(password_server.url + "/login")
        expect(page.locator("input[name=password]")).to_be_visible()  # the header logged no one in
        for password in [WRONG_PASSWORD] * 3 + [PASSWORD]:
            page.fill("input[name=user]", "ines")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_load_state()
        expect(page.locator("#moi-login-error")).to_contain_text("Too many failed logins; try again in")
        assert not any(cookie["name"] == "moi_session" for cookie in context.cookies())
    finally:
        context.close()


def socket_status(server: Server, cookies: dict[str, str]) -> int:
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    request = HTTPRequest(server.url.replace("http", "ws") + "/moi-ws/", headers={"Cookie": header})

    async def connect() -> int:
        try:
            socket = await websocket_connect(request)
        except HTTPClientError as error:
            return error.code
        socket.close()
        return 101

    return run_async(connect())


def run_async(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end in a thread of its own: the module's playwright loop runs in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=60)


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(r: Any, password_server: Server) -> None:
    add_user("bob")
    with httpx.Client() as client:
        wrong = post_login(client, password_server, "bob", WRONG_PASSWORD)
        unknown = post_login(client, password_server, "nobody", WRONG_PASSWORD)
        empty = post_login(client, password_server, "nobody", "")
    assert wrong.status_code == unknown.status_code == empty.status_code == 401
    assert error_line(wrong) == error_line(unknown) == error_line(empty) == "Wrong user name or password."
    assert "user" not in wrong.cookies and "moi_session" not in wrong.cookies
    assert WRONG_PASSWORD not in wrong.text


def test_failed_logins_are_throttled_then_allowed_after_the_wait(r: Any, password_server: Server) -> None:
    add_user("carol")
    with httpx.Client() as client:
        for _ in range(3):
            assert post_login(client, password_server, "carol", WRONG_PASSWORD).status_code == 401
        refused = post_login(client, password_server, "carol", PASSWORD)  # the right one: not even checked
        assert refused.status_code == 429
        assert re.fullmatch(r"Too many failed logins; try again in \d+ s\.", error_line(refused))
        deadline = time.monotonic() + 20
        while (answer := post_login(client, password_server, "carol", PASSWORD)).status_code == 429:
            assert time.monotonic() < deadline, "still throttled"
            time.sleep(0.2)
        assert answer.status_code == 302 and "moi_session" in client.cookies


def test_user_logout_ends_a_live_session_and_the_users_tokens(r: Any, password_server: Server) -> None:
    add_user("dave")
    token = run_moi("token", "create", "--user", "dave").stdout.strip()
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client() as client:
        assert post_login(client, password_server, "dave", PASSWORD).status_code == 302
        assert client.get(password_server.url + "/api/v1/jobs").status_code == 200
        assert httpx.get(password_server.url + "/api/v1/jobs", headers=bearer).status_code == 200
        cookies = {cookie.name: str(cookie.value) for cookie in client.cookies.jar}
        done, frames = run_async(logout_with_a_socket_open(password_server, cookies, "dave"))
        assert done.stdout.strip() == "ended 1 login(s) and revoked 1 token(s) of dave", done.stderr
        assert any("your login has ended" in frame for frame in frames)  # the open socket told, then closed
        assert client.get(password_server.url + "/api/v1/jobs").status_code == 401
        assert client.get(password_server.url + "/").status_code == 302
    assert httpx.get(password_server.url + "/api/v1/jobs", headers=bearer).status_code == 401


async def logout_with_a_socket_open(
    server: Server, cookies: dict[str, str], user: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``moi user logout USER`` while a socket of theirs is open; the frames it got until it closed."""
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    socket = await websocket_connect(
        HTTPRequest(server.url.replace("http", "ws") + "/moi-ws/", headers={"Cookie": header})
    )
    await socket.write_message('{"get": []}')
    assert await asyncio.wait_for(socket.read_message(), 30) is not None  # open and answering
    done = await asyncio.to_thread(run_moi, "user", "logout", user)
    frames = []
    while (frame := await asyncio.wait_for(socket.read_message(), 30)) is not None:
        frames.append(str(frame))
    return done, frames


def test_accounts_listed_without_hashes_admins_changed_and_removed(r: Any, password_server: Server) -> None:
    add_user("erin", "--admin")
    add_user("frank")
    listing = run_moi("user", "list").stdout
    assert re.search(r"^erin\tadmin\t\S+", listing, re.M) and re.search(r"^frank\tuser\t", listing, re.M)
    assert "argon2" not in listing and PASSWORD not in listing
    assert "argon2" in r.hget("moi:accounts", "erin") and PASSWORD not in r.hget("moi:accounts", "erin")
    with httpx.Client() as admin, httpx.Client() as user:
        assert post_login(admin, password_server, "erin", PASSWORD).status_code == 302
        assert post_login(user, password_server, "frank", PASSWORD).status_code == 302
        assert admin.get(password_server.url + "/ops").status_code == 200  # the account's flag makes an admin
        assert user.get(password_server.url + "/ops").status_code == 403
        assert "exists already" in moi_stdin("user", "add", "frank", "--password-stdin").stderr
        assert run_moi("user", "remove", "frank").returncode == 0
        assert user.get(password_server.url + "/api/v1/jobs").status_code == 401  # removed: its login ends
        changed = moi_stdin("user", "passwd", "erin", "--password-stdin", password=WRONG_PASSWORD)
        assert changed.returncode == 0 and WRONG_PASSWORD not in changed.stdout + changed.stderr
        assert changed.stdout.strip() == "changed the password of erin; ended 1 login(s)"
        assert admin.get(password_server.url + "/api/v1/jobs").status_code == 401  # a new password: logins end
    assert "No account 'frank'" in run_moi("user", "remove", "frank").stderr
    short = moi_stdin("user", "add", "gina", "--password-stdin", password="short")
    assert short.returncode != 0 and "fewer than 8 characters" in short.stderr and "short" not in short.stdout
    with httpx.Client() as client:
        assert post_login(client, password_server, "erin", PASSWORD).status_code == 401
        assert post_login(client, password_server, "erin", WRONG_PASSWORD).status_code == 302


def test_a_non_loopback_bind_needs_a_real_login_method(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = run_moi("server", "--address", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode != 0 and "[server] logins = password" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not bind_allowed("0.0.0.0") and bind_allowed("0.0.0.0", dev_login_anywhere=True)
    monkeypatch.setenv("MOI_LOGINS", "password")
    moi.jobs.connections.reset()
    try:
        assert bind_allowed("0.0.0.0")
        monkeypatch.setenv("MOI_LOGINS", "dev, password")
        moi.jobs.connections.reset()
        assert not bind_allowed("0.0.0.0")
    finally:
        monkeypatch.delenv("MOI_LOGINS")
        moi.jobs.connections.reset()


def test_the_header_login_trusts_only_the_listed_proxies(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``logins = header``: GET /login with the proxy's header logs in, from a trusted address only."""
    from moi.server import make_app
    from tests.web import serving

    async def login_from_proxy(proxies: str) -> tuple[httpx.Response, int]:
        monkeypatch.setenv("MOI_LOGINS", "header")
        monkeypatch.setenv("MOI_TRUSTED_PROXIES", proxies)
        moi.jobs.connections.reset()
        async with serving(make_app(cookie_secret="header-tests", moi_sessions=True)) as port:  # noqa: SIM117
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                answer = await client.get("/login?next=/submit", headers={"X-Remote-User": "hana"})
                jobs = (await client.get("/api/v1/jobs")).status_code
                xsrf = "2|00000000|" + "a" * 32 + "|0"  # any well-formed token, the same in the cookie
                client.cookies.set("_xsrf", xsrf)
                form = await client.post("/login", data={"user": "hana", "_xsrf": xsrf})  # no dev nor password login
                assert form.status_code == 403
        return answer, jobs

    try:
        trusted, jobs = run_async(login_from_proxy("10.9.9.0/24, 127.0.0.1"))
        assert trusted.status_code == 302 and trusted.headers["Location"] == "/submit" and jobs == 200
        untrusted, jobs = run_async(login_from_proxy("10.9.9.9"))
        assert untrusted.status_code == 401 and "moi_session" not in untrusted.cookies and jobs == 401
        assert error_line(untrusted).endswith("login proxy.")
        assert bind_allowed("0.0.0.0")
        with pytest.raises(ConfigError, match="trusted_proxies"):
            build_settings({"trusted_proxies": ""})
    finally:
        monkeypatch.delenv("MOI_LOGINS")
        moi.jobs.connections.reset()


def test_no_password_reaches_the_servers_log(password_server: Server) -> None:
    """Last: it stops the module's server to read all it logged."""
    proc = password_server.proc
    assert proc is not None and proc.stderr is not None
    proc.terminate()
    logged = proc.communicate(timeout=60)[1]
    password_server.proc = None
    assert "failed login for" in logged  # the log was captured, with the failures it names
    assert PASSWORD not in logged and WRONG_PASSWORD not in logged
