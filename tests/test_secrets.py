"""No message, frame or log line shows a Redis password: every URL is shown masked."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import moi.jobs.connections
from moi.core.info import new_id
from moi.server import make_app
from moi.storage import redis_server
from tests.conftest import run_moi
from tests.test_relay_security import SECRET, connect, frames_until, is_get_of
from tests.web import serving

PASSWORD = "S3cret-never-shown"


@pytest.fixture
def locked_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Redis of the test's own that asks for PASSWORD; moi pointed at it."""
    proc, url = redis_server.start_redis(tmp_path / "redis", password=PASSWORD)
    monkeypatch.setenv("MOI_REDIS_URL", url)
    moi.jobs.connections.reset()
    yield proc, url
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)
    moi.jobs.connections.reset()


def test_the_cli_names_an_unreachable_redis_without_its_password() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.free_port()}/0"
    done = run_moi("job", "--job-id", new_id(), env={"MOI_REDIS_URL": url})
    assert done.returncode == 1
    assert "Redis is unreachable at redis://:***@127.0.0.1:" in done.stderr, done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_the_watchdog_logs_an_unreachable_redis_without_its_password() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.free_port()}/0"
    command = [sys.executable, "-m", "moi", "watchdog", "--interval", "0.2"]
    env = {**os.environ, "MOI_REDIS_URL": url}
    watching = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert watching.stdout is not None
        lines = [watching.stdout.readline() for _ in range(3)]  # the banner, then passes that find no Redis
        watching.send_signal(signal.SIGTERM)
        rest, _ = watching.communicate(timeout=60)
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait(10)
    output = "".join(lines) + rest
    assert "redis://:***@127.0.0.1:" in output and "unreachable" in output, output
    assert PASSWORD not in output


def test_websocket_frames_and_server_logs_never_show_the_password(locked_redis, caplog) -> None:
    proc, url = locked_redis
    store = moi.jobs.connections.store()
    group = store.ensure_group("alice")

    async def test() -> list[dict[str, object]]:
        async with serving(make_app(cookie_secret=SECRET)) as port:
            ws = await connect(port, "alice")
            ws.write_message(json.dumps({"get": []}))
            frames = await frames_until(ws, is_get_of(group))
            proc.terminate()  # Redis goes away under an open page
            proc.wait(10)
            ws.write_message(json.dumps({"get": []}))
            frames += await frames_until(ws, lambda frame: "error" in frame)
            ws.close()
            return frames

    with caplog.at_level(logging.DEBUG):
        frames = asyncio.run(test())
    errors = [str(frame["error"]) for frame in frames if "error" in frame]
    assert errors and "redis://:***@127.0.0.1:" in errors[-1], errors
    assert PASSWORD not in json.dumps(frames)
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)
