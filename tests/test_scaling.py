"""Adding and removing engines of the embedded cluster through the API, as the operations page does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from moi.storage.redis_server import free_port
from tests.browser import Server
from tests.conftest import until


def embedded_env(state: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("MOI_REDIS_URL", "MOI_CONTEXTS")}
    env.update(MOI_STATE_DIR=str(state), MOI_ENGINES="1")
    return env


def moi(env: dict[str, str], *args: str) -> str:
    """A moi command with exactly this environment (the embedded runtime's, not the test session's)."""
    done = subprocess.run(
        [sys.executable, "-m", "moi", *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_an_admin_adds_an_engine_and_removes_an_idle_one_while_a_job_runs(tmp_path: Path) -> None:
    env = embedded_env(tmp_path / "state")
    assert moi(env, "submit", "--cmd", "return 1", "--block").endswith(": 1")  # the runtime, started
    admin = moi(env, "token", "create", "--user", "ops", "--admin")
    user = moi(env, "token", "create", "--user", "alice")
    server = Server(free_port(), env=env)
    server.start()
    try:
        api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        engines = "/contexts/default/engines"

        def live() -> list[dict[str, Any]]:
            answer = api.get("/workers")
            assert answer.status_code == 200, answer.text
            return [w for w in answer.json()["workers"] if w["state"] != "lost"]

        until(lambda: len(live()) == 1, "the one engine listed")
        assert api.post(f"{engines}/remove").json()["code"] == "conflict"  # at least one stays
        refused = httpx.post(f"{server.url}/api/v1{engines}/add", headers={"Authorization": f"Bearer {user}"})
        assert refused.status_code == 403

        assert api.post(f"{engines}/add").json() == {"context": "default", "engines_wanted": 2}
        until(lambda: len(live()) == 2, "a second engine, started and listed")

        slow = api.post("/jobs", json={"cmd": "import time; time.sleep(60)"}).json()["id"]
        busy = until(lambda: [w for w in live() if w["job"] == slow], "the slow job on an engine")[0]
        assert api.post(f"{engines}/remove").json()["engines_wanted"] == 1
        until(lambda: [w["label"] for w in live()] == [busy["label"]], "the idle engine stopped, the busy one kept")
        assert api.get(f"/jobs/{slow}").json()["status"] == "Running"  # a removal cuts no job short
        assert api.post(f"/jobs/{slow}/cancel").status_code == 200
        quick = api.post("/jobs", json={"cmd": "return 6 * 7"}).json()["id"]
        assert until(lambda: api.get(f"/jobs/{quick}").json()["status"] == "Success", "a job on the engine kept")
    finally:
        server.stop()
        moi(env, "down")
