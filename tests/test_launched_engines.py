"""Adding and removing engines of a cluster the operator started (not the embedded one), from the operations
page and the API: a second real ipyparallel cluster, local engine launcher, its cluster file on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from moi.core.info import Status
from moi.job import submit
from moi.jobs import connections
from moi.storage.redis_server import free_port
from tests import retry_jobs
from tests.browser import Server, log_in, quiet
from tests.conftest import QUICK_CONTROLLER, finished, run_moi, until


@pytest.fixture(scope="module")
def extra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cluster of one engine, started as ``ipcluster start`` would: its connection file's path."""
    import ipyparallel

    profile = tmp_path_factory.mktemp("extra") / "ipython"
    cluster = ipyparallel.Cluster(n=1, profile_dir=str(profile), cluster_id="extra", controller_args=QUICK_CONTROLLER)
    cluster.start_cluster_sync()
    client = cluster.connect_client_sync()
    client.wait_for_engines(1, timeout=120)
    client.close()
    yield str(profile / "security" / "ipcontroller-extra-client.json")
    # Every engine, the ones moi added too (the file may not list them: this process rewrites it when its
    # own engine set stops), through the controller; then the controller.
    client = cluster.connect_client_sync()
    client.shutdown(targets="all", block=True)
    client.close()
    cluster.stop_cluster_sync()


def hold(marks: Path) -> str:
    """A job on ``extra`` that runs until its ``release-1`` file appears."""
    marks.mkdir()
    return submit("extra", "eng-user", marks.name, None, retry_jobs.attempt_then_wait, str(marks))[0]


@pytest.mark.slow
def test_an_admin_adds_an_engine_of_an_ipcluster_and_removes_an_idle_one_while_a_job_runs(
    r: Any, browser: Any, extra: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    monkeypatch.setenv("MOI_CONTEXTS", f"{os.environ['MOI_CONTEXTS']},extra={extra},bare={tmp_path}/none.json")
    connections.reset()
    server = Server(free_port(), env={**os.environ, "MOI_ADMINS": "ops"})
    server.start()
    try:
        admin = run_moi("token", "create", "--user", "ops", "--admin").stdout.strip()
        api = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {admin}"}, timeout=60)

        def live() -> list[dict[str, Any]]:
            workers = api.get("/workers").json()["workers"]
            return [w for w in workers if w["context"] == "extra" and w["state"] != "lost"]

        refused = api.post("/contexts/bare/engines/add")
        assert refused.status_code == 409, refused.text
        assert "'bare' has no cluster file beside its connection file" in refused.json()["error"]
        until(lambda: len(live()) == 1, "the extra cluster's one engine listed")
        seen = api.get("/contexts").json()["contexts"]
        assert (seen["extra"]["scalable"], seen["bare"]["scalable"]) == (True, False)

        page = browser.new_context().new_page()
        with quiet(page):  # the page: buttons for the contexts moi can scale only; one engine added there
            log_in(page, server, "ops", "/ops")
            expect(page.locator(".moi-contexts tr", has_text="bare").locator(".moi-add-engine")).to_have_count(0)
            page.locator(".moi-contexts tr", has_text="extra").locator(".moi-add-engine").click()
            expect(page.locator(".moi-message")).to_have_text("extra: 2 engine(s) wanted")
        page.context.close()
        until(lambda: len(live()) == 2, "a second engine, started by the cluster's own launcher, listed")

        first, second = hold(tmp_path / "first"), hold(tmp_path / "second")  # one on each engine: both run jobs
        until(lambda: all(w["job"] for w in live()) and len(live()) == 2, "both engines running a job")
        (tmp_path / "second" / "release-1").touch()
        assert finished(second)["status"] == Status.SUCCESS
        busy = [w["label"] for w in live() if w["job"] == first]

        assert api.post("/contexts/extra/engines/remove").json() == {"context": "extra", "engines_wanted": 1}
        until(lambda: [w["label"] for w in live()] == busy, "the idle engine stopped, the busy one kept")
        assert connections.store().get(first)["status"] == Status.RUNNING  # a removal cuts no job short
        (tmp_path / "first" / "release-1").touch()
        assert finished(first)["status"] == Status.SUCCESS
        until(lambda: api.get("/contexts").json()["contexts"]["extra"]["engines"] == 1, "one engine counted")
        assert api.post("/contexts/extra/engines/remove").status_code == 409  # one engine at least stays
    finally:
        server.stop()
        connections.reset()
