"""A client that asks and never reads: what it costs the server, and every other user.

    python -m benchmarks.flood [--frames 1200] [--jobs 200]

Starts its own redis-server (free port, temporary directory) and a ``moi server``
application (``moi.server.make_app``) in a process of its own on 127.0.0.1. User
``flooder`` has ``--jobs`` jobs, so each ``{"get": []}`` is a real answer of that many
frames. A raw-socket client logs in as ``flooder``, does the websocket handshake,
sends ``--frames`` gets and never reads a byte; meanwhile a second user's client
asks for its own group again and again and times each answer. Printed: the
server's RSS before and at its peak (psutil), the other user's latency p50/max,
how the flooder's socket ended, and any "exception was never retrieved" lines in
the server's log.

Uses only public pieces that predate the fix (make_app, Store, start_redis), so it
runs against older trees too: copy it into that tree's ``benchmarks/`` and run it there.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "flood-benchmark"
FLOODER, OTHER = "flooder", "other"
GET = json.dumps({"get": []})
SAMPLE_EVERY = 0.02  # seconds between the other user's requests, and between RSS samples
READ_AFTER = 10.0  # seconds the flooder reads after its hold, to see whether (and how) the server closed it


# a websocket client on a raw socket: it reads only when asked to ------------------------------


class RawSocket:
    """A websocket client that does the handshake and then reads nothing unless told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, cookie: str, receive_buffer: int = 4096) -> RawSocket:
        sock = socket.socket()
        # A small window: the server's writes back up after a few kilobytes, as with a stalled client.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /moi-ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        client = cls(sock)
        head = await client._until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise ConnectionError(f"upgrade refused: {head.splitlines()[0].decode(errors='replace')}")
        return client

    async def send(self, text: str) -> None:
        """One masked text frame (clients must mask)."""
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x81, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: ``(opcode, payload)``; ConnectionError at the end."""
        first, second = await self._take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self._take(8))
        return first & 0x0F, await self._take(size)

    async def close_code(self) -> int | None:
        """Read (and drop) frames up to the server's close frame; its code, or None if the socket just ended."""
        with contextlib.suppress(ConnectionError):
            while True:
                opcode, payload = await self.frame()
                if opcode == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else None
        return None

    def close(self) -> None:
        self.sock.close()

    async def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def _until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            await self._fill()
        head, _, self.buffer = self.buffer.partition(end)
        return head

    async def _fill(self) -> None:
        chunk = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk


def signed_cookie(user: str) -> str:
    from tornado.web import create_signed_value

    return "user=" + create_signed_value(SECRET, "user", user).decode()


# the server, in its own process ----------------------------------------------------------------


async def serve(port: int) -> None:
    import logging

    from moi.server import make_app

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    server = make_app(cookie_secret=SECRET).listen(port, address="127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.stop()
    await asyncio.sleep(0.5)  # sockets closed just now finish leaving their groups


def start_server(port: int, log_file: Path) -> subprocess.Popen[str]:
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.flood", "serve", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the server did not start; see {log_file}")
    return proc


# the measurement -------------------------------------------------------------------------------------


def fill_redis(jobs: int) -> None:
    """``jobs`` info objects in the flooder's group, written through moi's Store; the other user's group."""
    import moi.jobs.connections
    from moi.core.info import new_id, new_info

    store = moi.jobs.connections.store()
    # The other user's group has no jobs: each of its gets is answered by one frame, so a round trip is one.
    for user, count in ((FLOODER, jobs), (OTHER, 0)):
        group = store.ensure_group(user)
        if not count:
            continue
        ids = [new_id() for _ in range(count)]
        infos = [new_info(i, f"job {n}", "job", store.keys.channel(i), parent=group) for n, i in enumerate(ids)]
        for start in range(0, len(infos), 100):
            store.add_nodes(group, infos[start : start + 100])


async def other_user(port: int, done: asyncio.Event, latencies: list[float]) -> None:
    """The other user: ask for its own group, time the answer, again until ``done``."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(f"ws://127.0.0.1:{port}/moi-ws/", headers={"Cookie": signed_cookie(OTHER)})
    ws = await websocket_connect(request)
    group: str | None = None
    while not done.is_set():
        started = time.perf_counter()
        ws.write_message(json.dumps({"get": [group] if group else []}))
        raw = await ws.read_message()
        if raw is None:
            raise ConnectionError("the other user's socket was closed")
        group = json.loads(raw)["get"]["id"]
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(SAMPLE_EVERY)
    ws.close()


async def flood(port: int, frames: int, hold: float) -> tuple[int, str]:
    """Send ``frames`` gets, then read nothing for ``hold`` seconds; how many went out, how the socket ended."""
    client = await RawSocket.open(port, signed_cookie(FLOODER))
    sent = 0
    try:
        while sent < frames:
            await client.send(GET)
            sent += 1
    except OSError as error:  # the server gave up on this socket
        client.close()
        return sent, f"reset by the server after {sent} frames ({type(error).__name__})"
    await asyncio.sleep(hold)  # the server answers into a socket nobody reads
    try:  # now read what is left, to see how it ends
        code = await asyncio.wait_for(client.close_code(), READ_AFTER)
    except TimeoutError:
        return sent, f"still open (read for {READ_AFTER:.0f} s after the hold)"
    except OSError as error:
        return sent, f"reset by the server ({type(error).__name__})"
    finally:
        client.close()
    return sent, f"closed by the server with code {code}" if code else "ended by the server without a close frame"


async def sample_rss(pid: int, done: asyncio.Event, samples: list[int]) -> None:
    import psutil

    process = psutil.Process(pid)
    while not done.is_set():
        samples.append(process.memory_info().rss)
        await asyncio.sleep(SAMPLE_EVERY)


async def measure(port: int, pid: int, frames: int, hold: float) -> dict[str, Any]:
    import psutil

    latencies: list[float] = []
    warm = asyncio.Event()
    await other_user(port, _set_after(warm, 1.0), [])  # warm up: the server's first socket and reads
    baseline = psutil.Process(pid).memory_info().rss
    done, samples = asyncio.Event(), [baseline]
    tasks = [
        asyncio.ensure_future(other_user(port, done, latencies)),
        asyncio.ensure_future(sample_rss(pid, done, samples)),
    ]
    started = time.perf_counter()
    sent, ending = await flood(port, frames, hold)
    flood_seconds = time.perf_counter() - started
    done.set()
    await asyncio.gather(*tasks)
    return {
        "sent": sent,
        "ending": ending,
        "flood_seconds": flood_seconds,
        "rss_before": baseline,
        "rss_peak": max(samples),
        "latencies": latencies,
    }


def _set_after(event: asyncio.Event, seconds: float) -> asyncio.Event:
    asyncio.get_running_loop().call_later(seconds, event.set)
    return event


def report(figures: dict[str, Any], frames: int, jobs: int, log_file: Path) -> None:
    mib = 1024 * 1024
    latencies = sorted(figures["latencies"])
    never_retrieved = log_file.read_text(errors="replace").count("exception was never retrieved")
    print(f"flood: {frames} gets of a group of {jobs} jobs, never read; {figures['sent']} sent")
    print(f"  flooder's socket: {figures['ending']}; flood, hold and read: {figures['flood_seconds']:.1f} s")
    print(
        f"  server RSS: {figures['rss_before'] / mib:.0f} MiB before, {figures['rss_peak'] / mib:.0f} MiB at peak "
        f"(+{(figures['rss_peak'] - figures['rss_before']) / mib:.1f} MiB)"
    )
    if latencies:
        print(
            f"  other user's get: {len(latencies)} answered, p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms"
        )
    print(f"  'exception was never retrieved' in the server's log: {never_retrieved}")
    for line in log_file.read_text(errors="replace").splitlines()[-5:]:
        print(f"  server log: {line[:200]}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        asyncio.run(serve(int(argv[1])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1200, help="gets the flooder sends")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the flooder's group")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the flooder then reads nothing")
    options = parser.parse_args(argv)
    from moi.storage import redis_server

    with tempfile.TemporaryDirectory(prefix="moi-flood-") as directory:
        redis_proc, url = redis_server.start_redis(Path(directory) / "redis")
        os.environ["MOI_REDIS_URL"] = url
        os.environ["MOI_STATE_DIR"] = str(Path(directory) / "state")
        log_file = Path(directory) / "server.log"
        server = None
        try:
            fill_redis(options.jobs)
            port = redis_server.free_port()
            server = start_server(port, log_file)
            figures = asyncio.run(measure(port, server.pid, options.frames, options.hold))
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            report(figures, options.frames, options.jobs, log_file)
        finally:
            if server is not None and server.poll() is None:
                server.kill()
            redis_proc.terminate()
            redis_proc.wait(10)


if __name__ == "__main__":
    main(sys.argv[1:])
