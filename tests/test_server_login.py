"""Logins that must not reach another user's tree, and a login redirect that must not leave the site.

``moi server``'s application and the example application (examples/webserver.py),
each served over real HTTP on a free port, with the session's real Redis; the
``moi server`` command itself in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any
from urllib.parse import quote

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.web import Application, create_signed_value
from tornado.websocket import websocket_connect

import moi.jobs.connections
from moi.core.info import new_id, new_info
from moi.server import make_app
from moi.storage.redis_server import free_port
from moi.storage.store import Store
from tests.browser import Server
from tests.conftest import ROOT
from tests.web import serving as serving_on_port

SECRET = "login-tests"


def refused_names(store: Store) -> list[str]:
    """Login names that would reach a tree not their own: bob's group id (in any case), and moi's own names."""
    bobs_group = store.ensure_group("bob")
    return [bobs_group, bobs_group.upper(), "no-user", "moi:running", "moi:queued", "user-id-map", "x:jobs"]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("moi_example_webserver", ROOT / "examples" / "webserver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


@contextlib.asynccontextmanager
async def serving(app: Application) -> AsyncIterator[str]:
    """``app`` on a free port; yields its ``host:port``."""
    async with serving_on_port(app) as port:
        yield f"127.0.0.1:{port}"


async def fetch(url: str, **options: Any) -> HTTPResponse:
    """The response, whatever its status; redirects are not followed."""
    try:
        return await AsyncHTTPClient().fetch(url, follow_redirects=False, raise_error=False, **options)
    except HTTPClientError as error:  # pragma: no cover - raise_error=False answers instead
        assert error.response is not None
        return error.response


async def log_in(host: str, user: str, next_path: str | None = None) -> HTTPResponse:
    """POST the login form as a browser would: the xsrf cookie and the same token in the form."""
    token = "2|00000000|" + "a" * 32 + "|0"  # any well-formed token works when the cookie holds the same one
    query = "" if next_path is None else "?next=" + quote(next_path, safe="")
    body = f"_xsrf={quote(token)}&user={quote(user)}"
    return await fetch(f"http://{host}/login{query}", method="POST", body=body, headers={"Cookie": f"_xsrf={token}"})


def user_cookie(secret: str, user: str) -> str:
    """A cookie signed with the application's own secret: what a stolen secret or an old login would give."""
    return "user=" + create_signed_value(secret, "user", user).decode()


async def ws_status(host: str, cookie: str) -> int:
    """101 when the websocket upgrade is accepted, else the refusal's status."""
    try:
        ws = await websocket_connect(HTTPRequest(f"ws://{host}/moi-ws/", headers={"Cookie": cookie}))
    except HTTPClientError as error:
        return error.code
    ws.close()
    return 101


def set_user_cookie(response: HTTPResponse) -> bool:
    return any(value.startswith("user=") for value in response.headers.get_list("Set-Cookie"))


# moi server -----------------------------------------------------------------------------------


def test_moi_server_refuses_logins_that_alias_a_group_or_a_moi_name(store: Store) -> None:
    async def test() -> None:
        async with serving(make_app(cookie_secret=SECRET)) as host:
            for name in refused_names(store):
                answer = await log_in(host, name)
                assert answer.code == 400 and not set_user_cookie(answer), name
                assert "That user name is refused" in answer.body.decode(), name
                # A cookie forged for that name: no socket, no page.
                assert await ws_status(host, user_cookie(SECRET, name)) == 403, name
                page = await fetch(f"http://{host}/", headers={"Cookie": user_cookie(SECRET, name)})
                assert page.code == 403, name
            good = await log_in(host, "alice")
            assert good.code == 302 and set_user_cookie(good)
            assert await ws_status(host, user_cookie(SECRET, "alice")) == 101

    asyncio.run(test())


OFF_SITE = [
    "//evil.example",
    "/\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "/ /evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "/a//evil.example",
    "/\x00/evil.example",
    "/\x7f/evil.example",
    "/\u2028/evil.example",
]


def test_the_login_redirect_never_leaves_the_site(r: Any) -> None:
    async def test() -> None:
        async with serving(make_app(cookie_secret=SECRET)) as host:
            for target in OFF_SITE:
                answer = await log_in(host, "alice", target)
                assert answer.code == 302, (target, answer.code)  # never a 500, whatever the bytes
                assert answer.headers["Location"] == "/", target
            answer = await log_in(host, "alice", "/jobs?page=2")
            assert answer.headers["Location"] == "/jobs?page=2"  # a path on the site is kept
            # The login page sends a safe next on with its form, and drops an unsafe one.
            form = (await fetch(f"http://{host}/login?next=%2Fjobs")).body.decode()
            assert 'action="/login?next=%2Fjobs"' in form
            form = (await fetch(f"http://{host}/login?next=%2F%09%2Fevil.example")).body.decode()
            assert 'action="/login?next=%2F"' in form

    asyncio.run(test())


def test_moi_server_says_the_login_is_open_and_refuses_other_addresses(r: Any) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "moi", "server", "--address", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "--insecure-dev-login-anywhere" in refused.stderr
    assert "Traceback" not in refused.stderr

    server = Server(free_port())
    server.start()
    proc = server.proc
    assert proc is not None
    server.stop()
    assert proc.stderr is not None
    warnings = [line for line in proc.stderr.read().splitlines() if "anyone" in line]
    assert len(warnings) == 1 and "log in as any user" in warnings[0]


# the example application ---------------------------------------------------------------------------


def test_the_example_refuses_such_logins_and_cookies(example: ModuleType, store: Store) -> None:
    bob = store.ensure_group("bob")
    bobs_job = new_id()
    store.add_nodes(bob, [new_info(bobs_job, "bob's", "job", store.keys.channel(bobs_job), parent=bob)])
    app = example.make_app()
    secret = app.settings["cookie_secret"]

    async def test() -> None:
        async with serving(app) as host:
            result_page = f"http://{host}/hello_result/{bobs_job}"
            assert (await fetch(result_page, headers={"Cookie": user_cookie(secret, "bob")})).code == 200
            for name in refused_names(store):
                answer = await log_in(host, name)
                assert answer.code == 400 and not set_user_cookie(answer), name
                assert "That user name is refused" in answer.body.decode()
                forged = user_cookie(secret, name)
                assert await ws_status(host, forged) == 403, name
                assert (await fetch(result_page, headers={"Cookie": forged})).code in (403, 404), name
                xsrf = "2|00000000|" + "b" * 32 + "|0"
                submit = await fetch(
                    f"http://{host}/hello",
                    method="POST",
                    body="",
                    headers={"Cookie": f"{forged}; _xsrf={xsrf}", "X-XSRFToken": xsrf},
                )
                assert submit.code == 403, name
            assert await ws_status(host, user_cookie(secret, "alice")) == 101

    asyncio.run(test())
    assert store.children(bob) == {bobs_job}  # no submit reached bob's group
    assert not re.search("[0-9a-f]{8}-", " ".join(store.users()))  # and no group id became a user name
    moi.jobs.connections.reset()
