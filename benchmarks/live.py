"""Live figures: how fast a job's change reaches a websocket client, and a fan-out.

- latency: one job at a time, from ``submit`` to its ``Success`` frame at a
  websocket client, and from the job's end (the job returns ``time.time()``)
  to that frame; beside Redis alone: an engine publishes ``time.time()`` and a
  subscriber in the same event loop as the websocket client receives it;
- fan-out: K clients, each its own user following its own group; one update
  per group (one Lua call writes and publishes all K). The relay's clock starts
  when Redis has run that call (it sends the K announcements as it returns) and
  stops when the last client has its frame; the write itself, and write plus
  relay, are timed on rows of their own. Beside it, a plain Tornado server that
  writes one published message to the same number of sockets (its clock starts
  before the publish); and the server's memory per socket.

Servers run in their own processes (``benchmarks.wsserver``); clients are
Tornado websocket clients in this process's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import psutil
import redis.asyncio as aioredis
from tornado.httpclient import HTTPRequest
from tornado.web import create_signed_value
from tornado.websocket import WebSocketClientConnection, websocket_connect

from benchmarks.services import Services, wait_until
from benchmarks.stats import Figure, percentile
from benchmarks.tasks import publish_stamp, stamp
from benchmarks.wsserver import BROADCAST_CHANNEL
from moi.core.info import Info, new_id, new_info
from moi.job import submit
from moi.jobs import connections
from moi.storage.store import store_for

log = logging.getLogger("benchmarks.live")

SECRET = "moi-benchmark-cookie-secret"
TIMEOUT = 60.0
CONNECT_AT_ONCE = 50
STAMP_CHANNEL = "bench-stamp"


# servers and clients -------------------------------------------------------


def start_server(services: Services, kind: str, env: dict[str, str] | None = None) -> tuple[int, psutil.Process]:
    port = services.free_port()
    proc = services.start_process(
        f"wsserver-{kind}",
        [sys.executable, "-m", "benchmarks.wsserver", kind, str(port), SECRET],
        env={"MOI_REDIS_URL": services.redis_url, "MOI_STATE_DIR": str(services.directory / "state"), **(env or {})},
    )
    wait_until(lambda: _listening(port) or proc.poll() is not None, 30, f"{kind} websocket server")
    if proc.poll() is not None:
        raise RuntimeError(f"the {kind} websocket server exited; see {services.directory}")
    return port, psutil.Process(proc.pid)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def connect(port: int, user: str, path: str = "/moi-ws/") -> WebSocketClientConnection:
    cookie = create_signed_value(SECRET, "user", user).decode()
    request = HTTPRequest(f"ws://127.0.0.1:{port}{path}", headers={"Cookie": f"user={cookie}"}, request_timeout=TIMEOUT)
    return await websocket_connect(request)


async def read_until(conn: WebSocketClientConnection, action: str, node_id: str) -> Info:
    """Frames until ``{action: info}`` for ``node_id``; bounded in time."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await conn.read_message()
            if frame is None:
                raise ConnectionError("websocket closed")
            body = json.loads(frame)
            info = body.get(action)
            if info is not None and info.get("id") == node_id:
                return info


async def following(port: int, user: str, job_id: str) -> WebSocketClientConnection:
    """A client of ``user``, once the server follows the user's tree (its ``get`` answered)."""
    conn = await connect(port, user)
    conn.write_message(json.dumps({"get": []}))
    await read_until(conn, "get", job_id)
    return conn


# latency -------------------------------------------------------------------


class Stamps:
    """Receipt times of Success frames (per job id) and of Redis stamps, read by background tasks."""

    def __init__(self) -> None:
        self.frames: dict[str, tuple[float, Info]] = {}
        self.redis: list[float] = []
        self.arrived = asyncio.Event()

    async def read_frames(self, conn: WebSocketClientConnection) -> None:
        while (frame := await conn.read_message()) is not None:
            now = time.time()
            # A job that ends before the relay has followed it arrives as its "add".
            body = json.loads(frame)
            info = body.get("update") or body.get("add")
            if info is not None and info.get("status") == "Success":
                self.frames[info["id"]] = (now, info)
                self.arrived.set()

    async def read_redis(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                self.redis.append(time.time() - float(message["data"]))
                self.arrived.set()

    async def wait(self, done: Any) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not done():
                self.arrived.clear()
                await self.arrived.wait()


async def latency(plan: Any, port: int) -> list[Figure]:
    """``plan.runs`` runs of ``plan.latency_samples`` jobs; percentiles per run."""
    ctx = connections.get_context("bench")
    store = connections.store()
    user = "latency-user"
    first, _, handle = submit(ctx, user, "warm", None, stamp)
    handle.get(TIMEOUT)
    conn = await following(port, user, first)
    pubsub = aioredis.Redis.from_url(store.url).pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(STAMP_CHANNEL)
    stamps = Stamps()
    readers = [asyncio.create_task(stamps.read_frames(conn)), asyncio.create_task(stamps.read_redis(pubsub))]
    figures: dict[str, Figure] = {}
    try:
        for _ in range(plan.runs):
            to_client, end_to_client, redis_alone = await _latency_run(plan.latency_samples, ctx, store.url, stamps)
            for figure in (
                *_percentiles("submit -> Success at websocket client", to_client),
                *_percentiles("job end -> websocket client", end_to_client),
                *_percentiles("Redis pub/sub alone (engine publishes)", redis_alone),
                _gap(end_to_client, redis_alone),
            ):
                figures.setdefault(figure.label, Figure(figure.label, figure.unit)).add(figure.runs[0])
    finally:
        for reader in readers:
            reader.cancel()
        conn.close()
        await pubsub.aclose()
    return list(figures.values())


async def _latency_run(samples: int, ctx: Any, redis_url: str, stamps: Stamps) -> tuple[list[float], ...]:
    """One job at a time, each followed by one Redis-alone stamp: both see the same machine."""
    loop = asyncio.get_running_loop()
    to_client, end_to_client = [], []
    stamps.redis.clear()
    for _ in range(samples):
        start = time.time()
        job_id, _, _ = await loop.run_in_executor(None, submit, ctx, "latency-user", "stamp", None, stamp)
        await stamps.wait(lambda job_id=job_id: job_id in stamps.frames)
        received, info = stamps.frames.pop(job_id)
        to_client.append((received - start) * 1e3)
        end_to_client.append((received - info["result"]) * 1e3)
        count = len(stamps.redis)
        # Through moi too: a raw apply_async would wait behind the engines' wait for more moi work.
        await loop.run_in_executor(
            None, submit, ctx, "latency-user", "stamp", None, publish_stamp, redis_url, STAMP_CHANNEL
        )
        await stamps.wait(lambda count=count: len(stamps.redis) > count)
    return to_client, end_to_client, [delay * 1e3 for delay in stamps.redis]


def _percentiles(label: str, samples: list[float]) -> list[Figure]:
    figures = []
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        figure = Figure(f"{label}, {name}", "ms")
        figure.add(percentile(samples, fraction))
        figures.append(figure)
    return figures


def _gap(moi: list[float], redis_alone: list[float]) -> Figure:
    figure = Figure("job end -> client p50 minus Redis alone p50 (target <= 2)", "ms")
    figure.add(percentile(moi, 0.5) - percentile(redis_alone, 0.5))
    return figure


# fan-out ------------------------------------------------------------------


async def _connect_all(port: int, users: list[str], job_ids: list[str]) -> list[WebSocketClientConnection]:
    conns: list[WebSocketClientConnection] = []
    for start in range(0, len(users), CONNECT_AT_ONCE):
        pairs = zip(users[start : start + CONNECT_AT_ONCE], job_ids[start : start + CONNECT_AT_ONCE], strict=True)
        conns += await asyncio.gather(*(following(port, user, job_id) for user, job_id in pairs))
    return conns


async def _received_at(conn: WebSocketClientConnection, action: str, node_id: str | None) -> float:
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await conn.read_message()
            if frame is None:
                raise ConnectionError("websocket closed")
            # Every client decodes its frame, as a page would, whichever server sent it.
            info = json.loads(frame).get(action)
            if info is not None and (node_id is None or info.get("id") == node_id):
                return time.perf_counter()


async def _open_clients(server: psutil.Process, connecting: Any) -> tuple[list[Any], float]:
    """Clients, and the server's memory growth per open socket (KiB)."""
    before = server.memory_info().rss
    conns = await connecting
    await asyncio.sleep(0.5)  # every socket is open on the server's side too
    return conns, (server.memory_info().rss - before) / len(conns) / 1024


def _changed(info: Info, round_index: int) -> Info:
    return {**info, "status": "Running", "progress": round_index, "revision": info["revision"] + 1}


def _writer(redis_url: str, prefix: str, ttl: int, pipe: Connection) -> None:
    """The producer of the fan-out's updates, in a process of its own (as engines are).

    Own process, so that the moment Redis has run the write (and sent the
    announcements) is read at once, not when this process's GIL frees up
    from the K clients reading their frames. Per batch of documents it
    answers (sent, returned, answers), on the system-wide monotonic clock.
    """
    store = store_for(redis_url, prefix, ttl)
    while (writes := pipe.recv()) is not None:
        sent = time.perf_counter()
        answers = store.write_many(writes)
        pipe.send((sent, time.perf_counter(), answers))


class Writer:
    """A ``_writer`` process for the duration of a ``with`` block."""

    def __init__(self, store: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_writer, args=(store.url, store.keys.prefix, store.ttl, child))

    def __enter__(self) -> Writer:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipe.send(None)
        self._process.join(TIMEOUT)
        if self._process.is_alive():
            self._process.kill()

    def write(self, writes: list[tuple[str, Info]]) -> tuple[float, float, list[Any]]:
        self._pipe.send(writes)
        if not self._pipe.poll(TIMEOUT):
            raise TimeoutError("the fan-out writer did not answer")
        answer: tuple[float, float, list[Any]] = self._pipe.recv()
        return answer


class MoiFanOut:
    """K clients of moi's relay, each its own user following its own group with one job."""

    def __init__(self, conns: list[WebSocketClientConnection], infos: list[Info], writer: Writer) -> None:
        self.conns, self.infos, self.writer = conns, infos, writer

    @staticmethod
    def jobs(clients: int) -> tuple[list[str], list[Info]]:
        store = connections.store()
        users = [f"fan-{index}" for index in range(clients)]
        infos = []
        for user in users:
            job_id = new_id()
            info = new_info(job_id, "fan", "job", store.keys.channel(job_id), context="bench")
            store.add_under(store.group_id(user), [info])
            infos.append(info)
        return users, infos

    async def round(self, round_index: int) -> tuple[float, float, float]:
        """One update per client: when the write was sent, when Redis had run it, when the last client had it.

        The K changed documents are made before the clock starts, as K engines would each make
        their own. Redis sends the K announcements as the one call that writes them returns:
        the relay's clock starts there, as the plain broadcast's starts at its publish.
        """
        changed = [_changed(info, round_index) for info in self.infos]
        pairs = zip(self.conns, changed, strict=True)
        waiters = [asyncio.create_task(_received_at(conn, "update", info["id"])) for conn, info in pairs]
        await asyncio.sleep(0)  # every waiter is reading before the updates go out
        writes = [(info["id"], info) for info in changed]
        sent, published, answers = await asyncio.get_running_loop().run_in_executor(None, self.writer.write, writes)
        last = max(await asyncio.gather(*waiters))
        if answers != [1] * len(changed):
            raise RuntimeError("a fan-out write lost its compare-and-set")
        self.infos = changed
        return sent, published, last


class PlainFanOut:
    """The same number of clients of the plain broadcast server."""

    def __init__(self, conns: list[WebSocketClientConnection], frame: str) -> None:
        self.conns, self.frame = conns, frame
        self.publisher: Any = aioredis.Redis.from_url(connections.store().url)

    async def round(self) -> float:
        """Milliseconds from the publish of one frame until the last client has it."""
        waiters = [asyncio.create_task(_received_at(conn, "update", None)) for conn in self.conns]
        await asyncio.sleep(0)
        start = time.perf_counter()
        await self.publisher.publish(BROADCAST_CHANNEL, self.frame)
        return (max(await asyncio.gather(*waiters)) - start) * 1e3


async def _plain_clients(port: int, clients: int) -> list[WebSocketClientConnection]:
    conns: list[WebSocketClientConnection] = []
    for start in range(0, clients, CONNECT_AT_ONCE):
        count = min(CONNECT_AT_ONCE, clients - start)
        conns += await asyncio.gather(*(connect(port, f"plain-{start + n}", "/ws/") for n in range(count)))
    return conns


async def fanout(
    plan: Any, moi_port: int, moi_server: psutil.Process, plain_port: int, plain_server: psutil.Process
) -> list[Figure]:
    """Both servers' clients open at once; the rounds alternate between them, so each ratio compares neighbours."""
    k = plan.clients
    relay = Figure(f"moi relay: {k} clients, own group each, one update each (from the updates published)", "ms")
    plain = Figure(f"plain Tornado broadcast: same {k} clients, one frame each", "ms")
    ratio = Figure(f"moi relay / plain Tornado, {k} clients (target <= 1.3)", "x")
    write = Figure(f"moi: writing and publishing the {k} updates (one Lua call)", "ms")
    end_to_end = Figure(f"moi write + relay: {k} clients, from the write sent", "ms")
    whole = Figure(f"moi write + relay / plain Tornado, {k} clients", "x")
    memory = Figure("moi relay: server memory per open socket", "KiB")
    plain_memory = Figure("plain Tornado: server memory per open socket", "KiB")
    users, infos = MoiFanOut.jobs(k)
    moi_conns, per_socket = await _open_clients(moi_server, _connect_all(moi_port, users, [i["id"] for i in infos]))
    memory.add(per_socket)
    plain_conns, per_socket = await _open_clients(plain_server, _plain_clients(plain_port, k))
    plain_memory.add(per_socket)
    side = PlainFanOut(plain_conns, json.dumps({"update": _changed(infos[0], 0)}))  # the same frame moi sends
    try:
        with Writer(connections.store()) as writer:
            moi = MoiFanOut(moi_conns, infos, writer)
            for round_index in range(plan.runs):
                if round_index % 2:  # alternate which side goes first
                    plain_ms = await side.round()
                    sent, published, last = await moi.round(round_index)
                else:
                    sent, published, last = await moi.round(round_index)
                    plain_ms = await side.round()
                relay.add((last - published) * 1e3)
                write.add((published - sent) * 1e3)
                end_to_end.add((last - sent) * 1e3)
                plain.add(plain_ms)
                ratio.add((last - published) * 1e3 / plain_ms)
                whole.add((last - sent) * 1e3 / plain_ms)
    finally:
        for conn in moi_conns + plain_conns:
            conn.close()
        await side.publisher.aclose()
    return [relay, plain, ratio, write, end_to_end, whole, memory, plain_memory]


# the section -----------------------------------------------------------------


def measure(plan: Any, services: Services) -> list[tuple[str, list[Figure]]]:
    moi_port, moi_server = start_server(services, "moi")
    plain_port, plain_server = start_server(services, "plain")
    return asyncio.run(_measure(plan, moi_port, moi_server, plain_port, plain_server))


async def _measure(
    plan: Any, moi_port: int, moi_server: psutil.Process, plain_port: int, plain_server: psutil.Process
) -> list[tuple[str, list[Figure]]]:
    latencies = await latency(plan, moi_port)
    fan_out = await fanout(plan, moi_port, moi_server, plain_port, plain_server)
    return [
        (f"Latency: one job at a time ({plan.latency_samples} samples)", latencies),
        (f"Fan-out: {plan.clients} websocket clients", fan_out),
    ]
