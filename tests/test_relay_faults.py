"""The websocket relay under faults: cancel from the page, a Redis restart, and random abuse.

A real Tornado server on a free port, real websocket clients, real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tornado.httpclient import HTTPRequest
from tornado.web import Application, create_signed_value
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

import moi.errors
import moi.jobs.connections
from moi.core.info import Info, Status, new_id, new_info
from moi.job import submit
from moi.storage import redis_server
from moi.storage.store import Store, set_fields
from moi.websocket import MOIMessageHandler
from tests import fault_jobs, jobs
from tests.web import run_to_end, serving

SECRET = "relay-fault-tests"
WAIT = 60  # seconds before a missing frame fails the test (a bound, never an assertion on time)


class Page:
    """A browser page: a socket, and the job list it would show, built only from frames."""

    def __init__(self, socket: WebSocketClientConnection) -> None:
        self.socket = socket
        self.nodes: dict[str, Info] = {}
        self.errors: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self.closed = False

    async def send(self, request: Any) -> None:
        await self.socket.write_message(
            request if isinstance(request, (str, bytes)) else json.dumps(request), binary=isinstance(request, bytes)
        )

    async def read(self, timeout: float) -> bool:
        """Apply the next frame; False when none came in time (or the socket closed)."""
        try:
            raw = await asyncio.wait_for(self.socket.read_message(), timeout)
        except TimeoutError:
            return False
        if raw is None:
            self.closed = True
            return False
        frame = json.loads(raw)
        self.frames.append(frame)
        ((action, body),) = frame.items()
        if action == "error":
            self.errors.append(body)
        elif action == "remove":
            self.nodes.pop(body["id"], None)
        elif body["revision"] >= self.nodes.get(body["id"], {"revision": -1})["revision"]:
            self.nodes[body["id"]] = body  # a stale update never wins
        return True

    async def until(self, done: Any, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"page never got there; last frames: {self.frames[-5:]}")
            await self.read(min(left, 0.5))

    @property
    def gone(self) -> bool:
        return self.closed or self.socket.protocol is None or self.socket.close_code is not None

    def status(self, node_id: str) -> str | None:
        return self.nodes.get(node_id, {}).get("status")


def server() -> contextlib.AbstractAsyncContextManager[int]:
    return serving(Application([(r"/moi-ws/", MOIMessageHandler)], cookie_secret=SECRET))


async def open_page(port: int, user: str) -> Page:
    cookie = create_signed_value(SECRET, "user", user).decode()
    request = HTTPRequest(f"ws://127.0.0.1:{port}/moi-ws/", headers={"Cookie": f"user={cookie}"})
    page = Page(await websocket_connect(request))
    await page.send({"get": []})
    return page


def add_job(store: Store, group_id: str, name: str = "job") -> str:
    job_id = new_id()
    store.add_nodes(group_id, [new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id)])
    return job_id


# cancel from the page ---------------------------------------------------------------------


def test_cancel_verb_cancels_own_jobs_only_and_says_when_nothing_to_cancel(store) -> None:
    async def test() -> None:
        running, group_id, _ = submit("default", "alice", "long", None, jobs.sleepy, 300)
        done, _, _ = submit("default", "alice", "quick", None, jobs.add, 1, 2)
        bobs = add_job(store, store.ensure_group("bob"), "bob's")
        async with server() as port:
            page = await open_page(port, "alice")
            await page.until(lambda p: p.status(running) == Status.RUNNING and p.status(done) == Status.SUCCESS)

            await page.send({"cancel": [running]})
            await page.until(lambda p: p.status(running) == Status.CANCELLED)

            await page.send({"cancel": [done]})
            await page.until(lambda p: any("already finished" in e for e in p.errors))
            await page.send({"cancel": [bobs]})
            await page.until(lambda p: any(bobs in e for e in p.errors))
            await page.send({"cancel": "not a list of ids" * 1000})
            await page.until(lambda p: len(p.errors) == 3)
            page.socket.close()
        assert store.get(bobs)["status"] == Status.QUEUED  # someone else's job is untouched
        assert store.get(done)["status"] == Status.SUCCESS

    run_to_end(test())


# a Redis restart ---------------------------------------------------------------------------


def test_pages_resync_after_a_redis_restart(own_redis, tmp_path: Path) -> None:
    url, port, servers = own_redis
    mark = tmp_path / "finished"

    async def test() -> None:
        job_id, _, _ = submit("default", "carol", "survives", None, fault_jobs.sleep_then_touch, 1.5, str(mark))
        async with server() as web_port:
            pages = [await open_page(web_port, "carol") for _ in range(2)]
            for page in pages:
                await page.until(lambda p: p.status(job_id) == Status.RUNNING)

            with contextlib.suppress(redis.ConnectionError):  # it goes away as it answers
                redis.Redis.from_url(url).shutdown(save=True)
            servers[0].wait(10)
            while not mark.exists():  # the job ends while Redis is down
                await asyncio.sleep(0.1)
            servers.append(redis_server.start_redis(tmp_path / "redis", port)[0])

            for page in pages:  # every open page: reconnected relay, re-read state
                await page.until(lambda p: p.status(job_id) == Status.SUCCESS)
                assert page.nodes[job_id]["result"] == 1.5
                page.socket.close()

    run_to_end(test())


# random abuse --------------------------------------------------------------------------------

VERBS = ["get", "remove", "cancel", "close", "update", "add", ""]
BIG = "<a 70 kB frame>"
ids = st.sampled_from(["job", "nested", "bobjob", "root", "nojob"])
frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50),
    st.builds(
        lambda verb, arg: json.dumps({verb: arg}),
        st.sampled_from(VERBS),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=20),
            st.lists(st.text(max_size=40), max_size=5),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
        ),
    ),
    st.just(BIG),  # stands for a frame over the size a request may have (its repr stays small)
    st.just(json.dumps({"get": [], "remove": []})),
)
actions = st.one_of(
    st.tuples(st.just("frame"), frames),
    st.tuples(st.sampled_from(["get", "remove", "cancel"]), st.lists(ids, min_size=1, max_size=3)),
    st.tuples(st.just("status"), ids),
    st.tuples(st.just("add"), ids),
)


# No shrinking: on a loaded machine each failing example costs its full wait; the raw one is reported.
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(actions, min_size=1, max_size=12))
def test_random_frames_and_actions_leave_the_server_up_and_the_page_consistent(store, r, steps) -> None:
    r.flushdb()
    alice = store.ensure_group("alice")
    nested = store.create_group("analysis", alice)
    tree = {"root": alice, "nested": nested, "job": add_job(store, alice), "nojob": new_id()}
    tree["bobjob"] = add_job(store, store.ensure_group("bob"))

    async def test() -> None:
        async with server() as port:
            page = await open_page(port, "alice")
            for step in steps:
                page = await _act(store, tree, page, port, step)
            await page.read(0.5)
            if page.gone:  # the last request closed it (a close verb): the page reconnects
                page = await open_page(port, "alice")
            answered = len(page.frames)
            await page.send({"get": []})  # the server still answers
            await page.until(lambda p: len(p.frames) > answered and _consistent(store, alice, p), timeout=20)
            page.socket.close()
        bobs = store.find(tree["bobjob"])  # never removed nor cancelled through alice's page
        assert bobs is not None and bobs["status"] != Status.CANCELLED

    run_to_end(asyncio.wait_for(test(), 60))  # one example never hangs the run


async def _act(store: Store, tree: dict[str, str], page: Page, port: int, step: tuple[str, Any]) -> Page:
    kind, what = step
    if kind == "frame":
        with contextlib.suppress(Exception):  # the server may close on a frame over its hard limit
            await page.send("x" * 70_000 if what == BIG else what)
            await page.read(0.05)
    elif kind == "status":
        with contextlib.suppress(moi.errors.UnknownId):
            store.update(tree[what], set_fields(status="step"))
    elif kind == "add":
        info = store.find(tree[what])
        if info is not None and info["type"] == "group":
            add_job(store, tree[what])
    else:
        with contextlib.suppress(WebSocketClosedError):  # closed by an earlier close verb, not yet noticed
            await page.send({kind: [tree[name] for name in what]})
    await page.read(0.05)
    if page.gone:
        page = await open_page(port, "alice")  # a closed socket: the page reconnects, as moi.js does
    return page


def _consistent(store: Store, group_id: str, page: Page) -> bool:
    """The page shows exactly the jobs under the group, each at its current revision and status."""
    if store.find(group_id) is None:
        return True
    in_redis = {info["id"]: (info["revision"], info["status"]) for info in store.descendant_jobs(group_id)}
    shown = {i: (n["revision"], n["status"]) for i, n in page.nodes.items() if n.get("type") == "job"}
    return shown == in_redis
