"""The websocket handler, with Tornado's testing tools, the session's Redis and cluster."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.testing import AsyncHTTPTestCase, gen_test
from tornado.web import Application, create_signed_value
from tornado.websocket import WebSocketClientConnection, websocket_connect

import moi.jobs.connections
from moi.core.info import new_id, new_info
from moi.job import submit
from moi.relay.hub import PUBSUB_CLIENT_NAME, READ_CLIENT_NAME
from moi.server import make_app
from moi.websocket import HUB_SETTING, MAX_FRAME
from tests import jobs

SECRET = "test-secret"
WAIT = 20  # seconds before a missing frame fails the test


def add_job(group_id: str, name: str = "job") -> str:
    store = moi.jobs.connections.store()
    job_id = new_id()
    store.add_nodes(group_id, [new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id)])
    return job_id


@pytest.mark.usefixtures("r")
class HandlerTest(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        return make_app(cookie_secret=SECRET)

    def tearDown(self) -> None:
        hub = self._app.settings.get(HUB_SETTING)
        if hub is not None:
            self.io_loop.run_sync(hub.close)
        super().tearDown()

    async def connect(self, user: str | None = "alice") -> WebSocketClientConnection:
        headers = {}
        if user is not None:
            headers["Cookie"] = "user=" + create_signed_value(SECRET, "user", user).decode()
        url = self.get_url("/moi-ws/").replace("http://", "ws://")
        return await websocket_connect(HTTPRequest(url, headers=headers))

    async def frame(self, ws: WebSocketClientConnection) -> Any:
        message = await asyncio.wait_for(ws.read_message(), WAIT)
        return None if message is None else json.loads(message)

    async def until(self, ws: WebSocketClientConnection, action: str, node_id: str, **fields: Any) -> list[Any]:
        """Frames read up to the one with ``action`` (``a|b``: either) for ``node_id`` (and ``fields``)."""
        seen = []
        while True:
            frame = await self.frame(ws)
            assert frame is not None, "socket closed"
            seen.append(frame)
            for name in action.split("|"):
                info = frame.get(name)
                if info and info["id"] == node_id and all(info.get(k) == v for k, v in fields.items()):
                    return seen

    async def own_tree(self, ws: WebSocketClientConnection) -> list[Any]:
        ws.write_message(json.dumps({"get": []}))
        first = await self.frame(ws)
        frames = [first] + [await self.frame(ws) for _ in first["get"]["jobs"]]
        return frames

    # tests -------------------------------------------------------------------

    @gen_test(timeout=60)
    async def test_no_user_no_socket(self) -> None:
        for user in (None, "not-a-signed-value"):
            with pytest.raises(HTTPClientError) as refused:
                if user is None:
                    await self.connect(None)
                else:
                    url = self.get_url("/moi-ws/").replace("http://", "ws://")
                    await websocket_connect(HTTPRequest(url, headers={"Cookie": f"user={user}"}))
            assert refused.value.code == 403
        # A user name that is someone else's group id does not open that group.
        bob = moi.jobs.connections.store().ensure_group("bob")
        add_job(bob, "bob's")
        with pytest.raises(HTTPClientError) as refused:
            await self.connect(bob)
        assert refused.value.code == 403

    @gen_test(timeout=120)
    async def test_a_job_live_from_queued_to_success(self) -> None:
        ws = await self.connect("alice")
        tree = await self.own_tree(ws)
        assert tree[0]["get"]["name"] == "alice" and tree[0]["get"]["type"] == "group"
        loop = asyncio.get_running_loop()
        job_id, _, _ = await loop.run_in_executor(None, submit, "default", "alice", "chatty", "/result", jobs.chatty, 3)
        # A quick job may already read Success when its add is relayed: then that add is the last frame.
        frames = await self.until(ws, "update|add", job_id, status="Success")
        assert frames[0] == {"add": frames[0]["add"]} and frames[0]["add"]["id"] == job_id
        statuses = [frames[0]["add"]["status"]] + [frame["update"]["status"] for frame in frames[1:]]
        # Changes arriving together are sent once, as the latest: forward only, ending in Success.
        order = ["Queued", "Running", "step 1 of 3", "step 2 of 3", "step 3 of 3", "Success"]
        assert [order.index(s) for s in statuses] == sorted({order.index(s) for s in statuses})
        assert statuses[-1] == "Success"
        revisions = [frames[0]["add"]["revision"]] + [frame["update"]["revision"] for frame in frames[1:]]
        assert revisions == sorted(set(revisions))  # never back in time, never twice
        assert next(iter(frames[-1].values()))["result"] == "done"
        ws.close()

    @gen_test(timeout=60)
    async def test_remove_own_job_and_refuse_others(self) -> None:
        store = moi.jobs.connections.store()
        alice_ws, bob_ws = await self.connect("alice"), await self.connect("bob")
        await self.own_tree(alice_ws)  # answered once the socket follows the tree
        await self.own_tree(bob_ws)
        alice, bob = store.ensure_group("alice"), store.ensure_group("bob")
        mine, theirs = add_job(alice, "mine"), add_job(bob, "theirs")
        await self.until(alice_ws, "add", mine)
        await self.until(bob_ws, "add", theirs)
        for verb in ("get", "remove"):
            alice_ws.write_message(json.dumps({verb: [theirs]}))
            refused = await self.frame(alice_ws)
            assert set(refused) == {"error"} and "theirs" not in json.dumps(refused)
        assert store.find(theirs) is not None
        alice_ws.write_message(json.dumps({"remove": [mine]}))
        removed = await self.until(alice_ws, "remove", mine)
        assert removed[-1]["remove"]["name"] == "mine"
        assert store.find(mine) is None and mine not in store.children(alice)
        bob_ws.write_message(json.dumps({"get": [bob]}))
        assert [f["get"]["id"] for f in [await self.frame(bob_ws), await self.frame(bob_ws)]] == [bob, theirs]
        alice_ws.close()
        bob_ws.close()

    @gen_test(timeout=60)
    async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(self) -> None:
        ws = await self.connect("alice")
        bad_frames: list[str | bytes] = [
            "not json",
            "{truncated",
            "null",
            '"get"',
            "[1, 2]",
            "{}",
            '{"get": [], "remove": []}',
            '{"frobnicate": []}',
            '{"get": 5}',
            '{"get": [1, 2]}',
            '{"get": {"id": "x"}}',
            '{"remove": [""]}',
            json.dumps({"get": ["x" * 300]}),
            json.dumps({"get": [str(n) for n in range(2000)]}),
            json.dumps({"get": ["y" * MAX_FRAME]}),  # oversized
            b'{"get": []}',  # binary
        ]
        with self.assertLogs("moi.websocket", "INFO") as logs:
            for bad in bad_frames:
                ws.write_message(bad, binary=isinstance(bad, bytes))
                answer = await self.frame(ws)
                assert set(answer) == {"error"} and isinstance(answer["error"], str), bad
        assert len(logs.records) == len(bad_frames)
        assert all(record.exc_info is None and "\n" not in record.getMessage() for record in logs.records)
        tree = await self.own_tree(ws)  # still usable
        assert tree[0]["get"]["name"] == "alice"
        ws.write_message(json.dumps({"close": None}))
        assert await self.frame(ws) is None  # closed on request
        assert ws.close_code == 1000

    @gen_test(timeout=60)
    async def test_sockets_share_a_fixed_number_of_redis_connections(self) -> None:
        client = redis.Redis.from_url(moi.jobs.connections.redis_url(), decode_responses=True)

        def hub_connections() -> int:
            names = (PUBSUB_CLIENT_NAME, READ_CLIENT_NAME)
            return sum(1 for c in client.client_list() if c.get("name") in names)

        # Connections of hubs closed by earlier tests may linger in CLIENT LIST for a moment.
        for _ in range(WAIT * 10):
            if hub_connections() == 0:
                break
            await asyncio.sleep(0.1)
        sockets = [await self.connect(f"user{n % 3}") for n in range(20)]
        for ws in sockets:
            ws.write_message(json.dumps({"get": []}))
        for ws in sockets:
            assert "get" in await self.frame(ws)
        assert sum(1 for c in client.client_list() if c.get("name") == PUBSUB_CLIENT_NAME) == 1
        assert hub_connections() <= 5
        for ws in sockets:
            ws.close()
        client.close()
