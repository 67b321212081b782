"""The relay against hostile input: deep frames, bad documents in Redis, forged names, floods.

A real Tornado server (moi server's application) on a free port, real websocket
clients, the session's real Redis. Nothing here asserts how long anything takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from tornado.httpclient import HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import create_signed_value
from tornado.websocket import WebSocketClientConnection, websocket_connect

from moi.info import dumps, new_id, new_info
from moi.server import make_app
from moi.store import Store
from moi.websocket import HUB_SETTING

SECRET = "relay-security-tests"
WAIT = 60  # seconds before a missing frame fails the test (a bound, never an assertion on time)


@contextlib.asynccontextmanager
async def server(**settings: Any) -> AsyncIterator[int]:
    app = make_app(cookie_secret=SECRET, **settings)
    sock, port = bind_unused_port()
    http = HTTPServer(app)
    http.add_sockets([sock])
    try:
        yield port
    finally:
        http.stop()
        hub = app.settings.get(HUB_SETTING)
        if hub is not None:
            await asyncio.wait_for(hub.close(), 15)


def cookie(user: str) -> str:
    return create_signed_value(SECRET, "user", user).decode()


async def connect(port: int, user: str) -> WebSocketClientConnection:
    request = HTTPRequest(f"ws://127.0.0.1:{port}/moi-ws/", headers={"Cookie": f"user={cookie(user)}"})
    return await websocket_connect(request)


async def frames_until(ws: WebSocketClientConnection, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Frames read up to and including the first for which ``done`` is true."""
    seen = []
    while True:
        raw = await asyncio.wait_for(ws.read_message(), WAIT)
        assert raw is not None, f"socket closed ({ws.close_code}); frames: {seen[-5:]}"
        seen.append(json.loads(raw))
        if done(seen[-1]):
            return seen


def is_get_of(node_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("get", {}).get("id") == node_id


def add_job(store: Store, group_id: str, name: str = "job", kind: str = "job") -> str:
    node_id = new_id()
    store.add_nodes(group_id, [new_info(node_id, name, kind, store.keys.channel(node_id), parent=group_id)])
    return node_id


# 8: a frame nested past the parser ------------------------------------------------------------


def test_a_frame_nested_too_deep_gets_an_error_frame(store: Store) -> None:
    async def test() -> None:
        group = store.ensure_group("alice")
        async with server() as port:
            ws = await connect(port, "alice")
            # 1,000 deep is past the parser's limit at the default recursion limit; 30,000 past any.
            for depth in (1000, 30_000):
                ws.write_message('{"get": ' + "[" * depth + "]" * depth + "}")
                (answer,) = await frames_until(ws, lambda frame: True)
                assert set(answer) == {"error"}, answer
            assert "nested too deeply" in answer["error"]
            ws.write_message(json.dumps({"get": []}))  # the socket is still usable
            await frames_until(ws, is_get_of(group))
            ws.close()

    asyncio.run(test())


# 7: bad documents in a user's tree --------------------------------------------------------------


def _bad_document(r: redis.Redis, store: Store, group: str, case: str) -> str:
    """Write one kind of bad node into ``group``'s tree, straight into Redis; the key it is in."""
    if case == "jobs-not-a-set":
        child = add_job(store, group, "a subgroup", kind="group")
        r.set(store.keys.children(child), "not a set")
        return store.keys.children(child)
    node_id = new_id()
    good = new_info(node_id, "bad", "job", store.keys.channel(node_id), parent=group)
    raw = {
        "not-json": "{this is not json",
        "not-an-object": "[1, 2, 3]",
        "no-id": dumps({k: v for k, v in good.items() if k != "id"}),
        "date-not-a-string": dumps({**good, "date_created": 12}),
        "revision-not-a-number": dumps({**good, "revision": "seven"}),
    }[case]
    r.set(store.keys.info(node_id), raw)
    r.sadd(store.keys.children(group), node_id)
    return store.keys.info(node_id)


@pytest.mark.parametrize(
    "case",
    ["not-json", "not-an-object", "no-id", "date-not-a-string", "revision-not-a-number", "jobs-not-a-set"],
)
def test_a_bad_document_is_skipped_with_an_error_frame_each_time(r: redis.Redis, store: Store, case: str) -> None:
    group = store.ensure_group("alice")
    good = add_job(store, group, "good")
    bad_key = _bad_document(r, store, group, case)

    async def test() -> None:
        async with server() as port:
            for _ in range(2):  # and again on a reconnect: the socket never dies of it
                ws = await connect(port, "alice")
                ws.write_message(json.dumps({"get": []}))
                frames = await frames_until(ws, is_get_of(good))
                errors = [frame["error"] for frame in frames if "error" in frame]
                assert len(errors) == 1 and f"Key {bad_key} holds a bad document" in errors[0], frames
                ws.write_message(json.dumps({"get": [good]}))
                await frames_until(ws, is_get_of(good))  # still open and answering
                ws.close()

    asyncio.run(test())


def test_a_followed_job_overwritten_with_garbage_keeps_its_last_state(r: redis.Redis, store: Store) -> None:
    async def test() -> None:
        group = store.ensure_group("alice")
        job = add_job(store, group, "soon garbage")
        async with server() as port:
            ws = await connect(port, "alice")
            ws.write_message(json.dumps({"get": []}))
            await frames_until(ws, is_get_of(job))
            r.set(store.keys.info(job), "garbage")
            r.publish(store.keys.channel(job), json.dumps({"update": [job]}))
            (error,) = await frames_until(ws, lambda frame: True)
            assert f"Key {store.keys.info(job)} holds a bad document" in error["error"]
            ws.write_message(json.dumps({"get": [group]}))  # the page's state is not touched
            frames = await frames_until(ws, is_get_of(group))
            assert not any("remove" in frame for frame in frames)
            ws.close()

    asyncio.run(test())


def test_a_refused_redis_command_is_not_reported_as_unreachable(r: redis.Redis, store: Store) -> None:
    async def test() -> None:
        group = store.ensure_group("alice")
        child = add_job(store, group, "a subgroup", kind="group")
        async with server() as port:
            ws = await connect(port, "alice")
            ws.write_message(json.dumps({"get": []}))
            await frames_until(ws, is_get_of(child))
            r.set(store.keys.children(child), "not a set")  # behind the relay's back
            ws.write_message(json.dumps({"remove": [child]}))
            (answer,) = await frames_until(ws, lambda frame: True)
            assert "refused a command" in answer["error"] and "WRONGTYPE" in answer["error"], answer
            assert "unreachable" not in answer["error"]
            ws.close()

    asyncio.run(test())
