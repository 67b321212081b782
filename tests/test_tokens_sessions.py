"""Sessions end when their credential does: a revoked or expired token's sockets close, and logout is a POST.

Two real Tornado servers (moi server's application, each with its own hub) on the session's
real Redis, real websocket clients, a real revoke through moi.storage.tokens and the CLI. Nothing here
asserts how long anything takes: each wait is a bound on a hang.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.websocket import WebSocketClientConnection, websocket_connect

from moi.core.info import Status
from moi.errors import InvalidExpiry
from moi.jobs import connections
from moi.storage import tokens
from moi.websocket import CLOSE_POLICY
from tests.conftest import run_moi
from tests.test_relay_security import WAIT, add_job, cookie, frames_until, is_get_of, server

GONE = "your token was revoked or has expired; this socket closes"


async def connect(port: int, token: str) -> WebSocketClientConnection:
    headers = {"Authorization": f"Bearer {token}"}
    return await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/moi-ws/", headers=headers))


async def closed_after_saying_why(socket: WebSocketClientConnection) -> None:
    """The socket's last frame says its token is gone, then the server closes it (1008)."""
    frames = []
    while (raw := await asyncio.wait_for(socket.read_message(), WAIT)) is not None:
        frames.append(json.loads(raw))
    assert frames and frames[-1] == {"error": GONE}, frames[-3:]
    assert socket.close_code == CLOSE_POLICY


async def api_status(port: int, token: str) -> int:
    request = HTTPRequest(f"http://127.0.0.1:{port}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code


def test_a_revoked_or_expired_tokens_sockets_close_on_every_server_and_their_verbs_are_refused(r) -> None:
    store = connections.store()
    group = store.ensure_group("tara")
    victim = add_job(store, group, "not to be cancelled")
    revoked, unannounced, kept = (tokens.create(store, "tara") for _ in range(3))
    expiring = tokens.create(store, "tara", expires_in=1.0)

    async def scenario() -> None:
        async with server() as first, server() as second:  # two servers, two hubs, one Redis
            on_first, on_second = await connect(first, revoked), await connect(second, revoked)
            quiet, survivor, short = await connect(first, unannounced), await connect(second, kept), await connect(
                first, expiring
            )
            for socket in (on_first, on_second, quiet, survivor, short):
                socket.write_message('{"get": []}')
                await frames_until(socket, is_get_of(group))

            # 1. Revoked (announced): both servers close the token's sockets; a cancel sent meanwhile does nothing.
            tokens.revoke(store, revoked)
            on_first.write_message(json.dumps({"cancel": [victim]}))
            await closed_after_saying_why(on_first)
            await closed_after_saying_why(on_second)

            # 2. Revoked behind the hubs' backs (no announcement, as if it were lost): the next verb is refused.
            r.hdel("moi:tokens", unannounced.split("_")[1])
            quiet.write_message(json.dumps({"cancel": [victim]}))
            await closed_after_saying_why(quiet)

            # 3. Expired: its socket closes by itself, and it opens nothing more.
            await closed_after_saying_why(short)
            for token in (revoked, unannounced, expiring):
                try:
                    await connect(first, token)
                except HTTPClientError as refused:
                    assert refused.code == 401
                else:
                    raise AssertionError("a dead token opened a socket")
                assert await api_status(second, token) == 401

            # Another token of the same user is untouched.
            survivor.write_message('{"get": []}')
            await frames_until(survivor, is_get_of(group))
            assert await api_status(first, kept) == 200
            survivor.close()

    asyncio.run(scenario())
    assert store.get(victim)["status"] != Status.CANCELLED
    assert not r.exists(f"{victim}:cancel")


def test_token_expiry_and_last_use_in_the_cli(r) -> None:
    made = run_moi("token", "create", "--user", "una", "--name", "ci", "--expires", "30d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert [found.last_used for found in tokens.listed(connections.store())] == [None]

    async def use() -> None:
        async with server() as port:
            assert await api_status(port, token) == 200

    asyncio.run(use())
    listed = run_moi("token", "list").stdout.rstrip("\n").split("\t")
    assert listed[1:4] == ["una", "user", "ci"]
    assert listed[5].startswith("expires 20") and listed[6].startswith("used 20")

    refused = run_moi("token", "create", "--user", "una", "--expires", "3x")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "Expiry '3x' is refused: write a duration such as 12h, 30d or 2w\n"
    with pytest.raises(InvalidExpiry):
        tokens.create(connections.store(), "una", expires_in=0)


async def fetch(port: int, path: str, **options: Any) -> HTTPResponse:
    url = f"http://127.0.0.1:{port}{path}"
    return await AsyncHTTPClient().fetch(url, follow_redirects=False, raise_error=False, **options)


def test_logout_is_a_post_with_the_xsrf_token(r) -> None:
    xsrf = "2|00000000|" + "a" * 32 + "|0"  # any well-formed token works when the cookie holds the same one
    logged_in = f"user={cookie('lou')}"

    async def scenario() -> None:
        async with server() as port:
            page = await fetch(port, "/", headers={"Cookie": logged_in})
            assert re.search(rb'<form class="moi-logout" method="post" action="/logout"><input[^>]*_xsrf', page.body)
            assert b'href="/logout"' not in page.body

            followed = await fetch(port, "/logout", headers={"Cookie": logged_in})  # a link, an <img>: no logout
            assert followed.code == 405 and "Set-Cookie" not in followed.headers
            forged = await fetch(port, "/logout", method="POST", body="", headers={"Cookie": logged_in})
            assert forged.code == 403 and "Set-Cookie" not in forged.headers  # no XSRF token: another site's form

            done = await fetch(
                port, "/logout", method="POST", body=f"_xsrf={xsrf}", headers={"Cookie": f"{logged_in}; _xsrf={xsrf}"}
            )
            assert (done.code, done.headers["Location"]) == (302, "/login")
            assert re.match(r'user="?"?;', done.headers["Set-Cookie"])  # cleared

    asyncio.run(scenario())
