"""A websocket server for the benchmark, in its own process.

``python -m benchmarks.wsserver moi PORT SECRET``: moi's relay
(``MOIMessageHandler`` at ``/moi-ws/``, users from the signed ``user`` cookie),
configured by ``MOI_REDIS_URL``.

``python -m benchmarks.wsserver files PORT SECRET``: moi's file routes (``/moi-files/``).

``python -m benchmarks.wsserver plain PORT SECRET``: the baseline, a plain
Tornado broadcast: every message published on ``BROADCAST_CHANNEL`` is written
to every open socket at ``/ws/``, as it is.

Prints ``ready`` once listening; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

import redis.asyncio as aioredis
from tornado.web import Application
from tornado.websocket import WebSocketClosedError, WebSocketHandler

BROADCAST_CHANNEL = "bench-broadcast"


class Broadcast(WebSocketHandler):
    sockets: set[Broadcast] = set()

    def open(self, *args: str, **kwargs: str) -> None:
        Broadcast.sockets.add(self)

    def on_close(self) -> None:
        Broadcast.sockets.discard(self)

    def on_message(self, message: str | bytes) -> None:
        pass


async def _broadcast_forever(redis_url: str) -> None:
    client: Any = aioredis.Redis.from_url(redis_url, decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(BROADCAST_CHANNEL)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        for socket in list(Broadcast.sockets):
            with contextlib.suppress(WebSocketClosedError):
                socket.write_message(message["data"])


def application(kind: str, secret: str) -> Application:
    if kind == "files":  # a job's files over HTTP (moi.web.file_routes)
        from moi.web.file_routes import FILES_ROUTE

        return Application([FILES_ROUTE], cookie_secret=secret)
    if kind == "moi":
        from moi.websocket import MOIMessageHandler

        return Application([(r"/moi-ws/", MOIMessageHandler)], cookie_secret=secret)
    return Application([(r"/ws/", Broadcast)], cookie_secret=secret)


async def serve(kind: str, port: int, secret: str) -> None:
    app = application(kind, secret)
    server = app.listen(port, "127.0.0.1", max_buffer_size=1 << 20)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    relay = loop.create_task(_broadcast_forever(os.environ["MOI_REDIS_URL"])) if kind == "plain" else None
    print("ready", flush=True)
    await stopping.wait()
    server.stop()
    if relay is not None:
        relay.cancel()


def main(argv: list[str]) -> None:
    kind, port, secret = argv
    profile_to = os.environ.get("MOI_BENCH_PROFILE")  # a file: the server's pyinstrument profile
    if not profile_to:
        asyncio.run(serve(kind, int(port), secret))
        return
    from pyinstrument import Profiler

    with Profiler(interval=0.0005) as profiler:
        asyncio.run(serve(kind, int(port), secret))
    with open(f"{profile_to}.{kind}.txt", "w") as out:
        out.write(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    main(sys.argv[1:])
