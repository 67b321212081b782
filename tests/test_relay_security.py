"""The relay against hostile input: deep frames, bad documents in Redis, forged names, floods.

A real Tornado server (moi server's application) on a free port, real websocket
clients, the session's real Redis. Nothing here asserts how long anything takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.web import Application, create_signed_value
from tornado.websocket import WebSocketClientConnection, websocket_connect

from benchmarks.flood import RawSocket
from moi.core.info import dumps, new_id, new_info
from moi.server import make_app
from moi.storage.store import Store
from moi.websocket import CLOSE_POLICY, SOCKETS_SETTING, UNSENT_SETTING, UNSENT_TIMEOUT_SETTING, MOIMessageHandler
from tests.web import run_to_end, serving

SECRET = "relay-security-tests"
WAIT = 60  # seconds before a missing frame fails the test (a bound, never an assertion on time)


def server(app: Application | None = None, **settings: Any) -> contextlib.AbstractAsyncContextManager[int]:
    """``app`` (moi server's application with ``settings``, by default) on a free port."""
    return serving(app or make_app(cookie_secret=SECRET, **settings))


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

    run_to_end(test())


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

    run_to_end(test())


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

    run_to_end(test())


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

    run_to_end(test())


# 5: log lines cannot be forged --------------------------------------------------------------------


def test_an_id_with_a_newline_cannot_forge_a_log_line(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        store.ensure_group("alice")
        async with server() as port:
            ws = await connect(port, "alice")
            for frame in ({"get": ["x\nINFO moi.websocket forged line"]}, {"no\nverb": []}):
                ws.write_message(json.dumps(frame))
                (answer,) = await frames_until(ws, lambda frame: True)
                assert "error" in answer
            ws.close()

    with caplog.at_level(logging.INFO, logger="moi.websocket"):
        run_to_end(test())
    refused = [record.getMessage() for record in caplog.records if record.getMessage().startswith("refused")]
    assert len(refused) == 2, refused
    assert all("\n" not in line for line in refused)
    assert "x\\nINFO moi.websocket forged line" in refused[0]


# 6: a client that sends and never reads; too many sockets -------------------------------------------


class Recording(MOIMessageHandler):
    """moi's handler, telling the test when the server is done with a socket."""

    closed: asyncio.Queue[str] | None = None

    def on_close(self) -> None:
        super().on_close()
        if Recording.closed is not None:
            Recording.closed.put_nowait(str(self.current_user))


async def flood(port: int, user: str, frames: int = 200) -> RawSocket:
    """A client that sends gets and reads nothing, until the server gives up on it."""
    client = await RawSocket.open(port, "user=" + cookie(user))
    for _ in range(frames):  # each answered by 101 frames, none of them read
        await client.send(json.dumps({"get": []}))
    return client


def test_a_client_that_never_reads_is_closed_and_others_are_still_served(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {UNSENT_SETTING: 256 * 1024, UNSENT_TIMEOUT_SETTING: 1}
    bob = store.ensure_group("bob")
    for user in ("reads-late", "never-reads"):
        group = store.ensure_group(user)
        for _ in range(5):
            store.add_nodes(group, [new_info(i, "job", "job", store.keys.channel(i), parent=group) for i in ids(20)])

    def given_up(user: str) -> bool:
        return any(f"closing the socket of {user}:" in record.getMessage() for record in caplog.records)

    async def test() -> None:
        Recording.closed = asyncio.Queue()
        app = Application([(r"/moi-ws/", Recording)], cookie_secret=SECRET, **settings)
        async with server(app) as port:
            late, never = await flood(port, "reads-late"), await flood(port, "never-reads")
            while not (given_up("reads-late") and given_up("never-reads")):
                await asyncio.sleep(0.05)  # the server gives up on both (bounded by the test's timeout)
            # One reads at last: what it was sent, then the close frame, with the code.
            assert await asyncio.wait_for(late.close_code(), WAIT) == CLOSE_POLICY
            never.close()  # the other goes away with the server's writes to it still pending
            assert sorted([await asyncio.wait_for(Recording.closed.get(), WAIT) for _ in "ab"]) == [
                "never-reads",
                "reads-late",
            ]
            late.close()
            other = await connect(port, "bob")  # another user is served as ever
            other.write_message(json.dumps({"get": []}))
            await frames_until(other, is_get_of(bob))
            other.close()

    with caplog.at_level(logging.INFO):
        run_to_end(test())
        gc.collect()  # an unretrieved exception is logged when its task is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert len([r for r in caplog.records if "closing the socket of" in r.getMessage()]) == 2


def test_a_users_sockets_are_bounded(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        async with server(**{SOCKETS_SETTING: 2}) as port:
            mine = [await connect(port, "alice") for _ in range(2)]
            with pytest.raises(HTTPClientError) as refused:
                await connect(port, "alice")
            assert refused.value.code == 429
            bobs = await connect(port, "bob")  # someone else's are counted apart
            mine.pop().close()
            for _ in range(WAIT * 20):  # the place comes free once the server has seen the close
                with contextlib.suppress(HTTPClientError):
                    mine.append(await connect(port, "alice"))
                    break
                await asyncio.sleep(0.05)
            assert len(mine) == 2
            for ws in [*mine, bobs]:
                ws.close()

    with caplog.at_level(logging.WARNING, logger="moi.websocket"):
        run_to_end(test())
    assert any("refused a socket for alice: 2 open already" in r.getMessage() for r in caplog.records)


def ids(count: int) -> list[str]:
    return [new_id() for _ in range(count)]
