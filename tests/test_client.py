"""The Python client against a real ``moi server`` (a subprocess), restarted while it waits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from moi.client import Client, ClientError
from moi.jobs import connections
from moi.storage import tokens
from moi.storage.redis_server import free_port
from tests.browser import Server


def test_the_client_submits_lists_and_waits_across_a_server_restart(r, tmp_path: Path) -> None:
    server = Server(free_port())
    server.start()
    token = tokens.create(connections.store(), "scripter", code=True)  # it submits cmd jobs
    client = Client(server.url, token, timeout=30, retries=8, backoff=0.25)
    try:
        quick = client.submit(cmd="return 6 * 7", name="quick")
        assert client.wait(quick, timeout=120)["result"] == 42
        slow = client.submit(cmd="import time; time.sleep(4); return 'slept'", name="slow")
        waited: dict[str, Any] = {}
        waiting = threading.Thread(target=lambda: waited.update(client.wait(slow, timeout=180)))
        waiting.start()
        server.stop()  # mid-wait: the client reconnects when it is back
        server.start()
        waiting.join(200)
        assert waited["status"] == "Success" and waited["result"] == "slept"

        assert [job["name"] for job in client.list()] == ["slow", "quick"]
        assert [job["name"] for job in client.list(q="qui")] == ["quick"]
        shell = client.submit(cmd="echo hi", cmd_type="system")
        assert client.wait(shell, timeout=120)["result"][0] == "hi\n"
        assert client.relaunch(quick) != quick

        with pytest.raises(ClientError) as refused:  # a 4xx is raised at once, never retried
            client.get("00000000-0000-4000-8000-000000000000")
        assert (refused.value.status, refused.value.code) == (404, "not_found")
        with pytest.raises(ClientError) as conflict:
            client.cancel(quick)
        assert conflict.value.status == 409
    finally:
        server.stop()
    down = Client(server.url, "moi_0123456789ab_" + "a" * 43, retries=1, backoff=0.01)
    with pytest.raises(ClientError, match="did not answer after 2 tries"):
        down.submit(cmd="return 1")
    client.close()
    down.close()
