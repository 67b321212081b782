"""A scheduler job's resources and state where a user meets them: ``moi submit``'s options, the HTTP API,
a service's ``resources``, ``moi job``, ``moi status``. All on ``scheduler = local`` contexts (a process here)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

import moi.jobs.connections
from moi import services
from moi.core.errors import InvalidValue, ServiceDefinitionError
from moi.job import cancel, get_info, submit, system_call
from moi.storage.redis_server import free_port
from tests.browser import Server, log_in
from tests.conftest import finished, nothing_stored, run_moi, until
from tests.test_api import call, multipart, payload, token_for
from tests.test_relay_security import server

HERE = {"here": {"scheduler": "local", "poll": "0.2"}}
ON_HERE = """
services:
  - name: sized
    context: here
    resources: {cores: 2, walltime: 2h}
    steps:
      - run: "true"
"""


class OnHere(services.Service):
    """A service whose jobs go to the ``here`` scheduler context, each asking for 2G."""

    name = "on-here"
    context = "here"
    resources = {"memory": "2G"}

    def run(self) -> str:
        return "true"


@pytest.fixture
def here(store: Any, tmp_path: Path) -> Any:
    """The ``here`` scheduler context, in this process and (``MOI_CONFIG_FP``) in moi commands run from it."""
    moi.jobs.connections.configure(schedulers=HERE)
    ini = tmp_path / "here.ini"
    ini.write_text("[context here]\nscheduler = local\npoll = 0.2\n")
    yield {"MOI_CONFIG_FP": str(ini)}
    moi.jobs.connections.reset()


def submitted(stdout: str) -> list[str]:
    return re.findall(r"Submitted job id: (\S+)", stdout)


def test_moi_submit_options_reach_the_info_and_a_bad_one_is_one_line(here: dict[str, str], r: Any, tmp_path) -> None:
    for options, words in (
        (["--context", "here", "--memory", "lots"], "'--memory': 'lots' is not an amount of memory"),
        (["--cores", "2"], "'--cores': context 'default' runs jobs on its engines"),
    ):
        refused = run_moi("submit", "--cmd", "true", "--cmd-type", "system", *options, env=here)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert nothing_stored(r)

    sized = ["--cores", "2", "--memory", "1G", "--walltime", "90m", "--partition", "debug"]
    one = run_moi("submit", "--context", "here", "--cmd", "true", "--cmd-type", "system", *sized, env=here)
    assert one.returncode == 0, one.stderr
    asked = {"cores": 2, "memory": 1024, "walltime": 5400, "partition": "debug"}
    assert get_info(submitted(one.stdout)[0])["resources"] == asked
    lines = tmp_path / "each.txt"
    lines.write_text("true\ntrue\n")
    each = run_moi("submit", "--context", "here", "--each", str(lines), "--gpus", "1", "--account", "xyz", env=here)
    assert each.returncode == 0, each.stderr
    assert [get_info(job)["resources"] for job in submitted(each.stdout)] == [{"gpus": 1, "account": "xyz"}] * 2

    (tmp_path / "sized.yaml").write_text(ON_HERE)
    with_service = {**here, "MOI_SERVICES": str(tmp_path / "sized.yaml")}
    bad = run_moi("run", "sized", "--memory", "lots", env=with_service)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.endswith("'lots' is not an amount of memory; write it as 512M, 128G or 1T\n")
    ran = run_moi("run", "sized", "--cores", "3", env=with_service)
    assert ran.returncode == 0, ran.stderr
    assert get_info(submitted(ran.stdout)[0])["run_on"] == {
        "context": "here",
        "resources": {"cores": 3, "walltime": 7200},
    }


def test_moi_job_and_moi_status_show_the_scheduler_job_and_its_context(here: dict[str, str], r: Any) -> None:
    job_id, _, _ = submit(
        "here", "alice", "sized", None, system_call, "true", resources={"cores": 2, "memory": "1G", "walltime": "90m"}
    )
    assert finished(job_id)["status"] == "Success"
    shown = run_moi("job", "--job-id", job_id, env=here)
    assert "resources\t: cores=2 memory=1G walltime=01:30:00\n" in shown.stdout, shown.stdout
    assert re.search(r"scheduler\t: local job \d+ on this machine: .*exit code 0\n", shown.stdout), shown.stdout
    until(lambda: r.get("moi:scheduler:here"), "the poller's first record")
    status = run_moi("status", env=here)
    assert status.returncode == 0, status.stderr
    assert "configured context: here -> local scheduler on this machine" in status.stdout
    line = r"context here: local on this machine, reachable, 0 pending, 0 running, 0 queued; last poll \d{4}-"
    assert re.search(line, status.stdout), status.stdout


def test_a_service_gives_its_context_and_resources_and_a_submission_adds_its_own(here: Any) -> None:
    (sized,) = services.documents.load(ON_HERE)
    assert services.documents.load(services.documents.dump([sized]))[0].definition == sized.definition  # round trip
    services.register(sized)
    try:
        job_id, _, _ = services.submit("sized", "alice", resources={"memory": "4G"})
        info = get_info(job_id)  # its hooks on an engine of the default context; its run's command to "here"
        assert info["context"] == moi.jobs.connections.settings().default_context
        assert info["run_on"] == {"context": "here", "resources": {"cores": 2, "walltime": 7200, "memory": 4096}}
        with pytest.raises(InvalidValue, match="walltime"):
            services.submit("sized", "alice", resources={"walltime": "forever"})
        cancel(job_id)
    finally:
        services.unregister("sized")
    with pytest.raises(ServiceDefinitionError, match="sized.*not an amount of memory"):
        services.documents.load(ON_HERE.replace("cores: 2", "memory: lots"))


def test_the_api_takes_resources_and_refuses_bad_ones_in_one_line(here: Any, r: Any) -> None:
    alice = token_for("alice")
    services.register(OnHere)

    async def scenario() -> None:
        async with server() as port:
            for body, words in (
                ({"cmd": "true", "cmd_type": "system", "resources": {"memory": "lots"}}, "not an amount of memory"),
                ({"cmd": "true", "cmd_type": "system", "resources": {"colour": "red"}}, "there is no resource"),
                ({"cmd": "true", "cmd_type": "system", "resources": "4 cores"}, '"resources" is an object'),
                ({"cmd": "true", "cmd_type": "system", "resources": {"cores": 2}}, "runs jobs on its engines"),
                ({"service": "on-here", "resources": {"cores": 0}}, "not a whole number from 1"),
                ({"service": "on-here", "resources": {"memory": "4G"}}, "allows at most 2048"),  # more than it gives
                ({"service": "on-here", "resources": {"partition": "long"}}, "allows none"),
            ):
                refused = await call(port, "POST", "/api/v1/jobs", alice, body)
                assert refused.code == 422, (body, refused.code, refused.body)
                assert words in payload(refused)["error"] and "\n" not in payload(refused)["error"]
            assert not r.keys("moi:queue:*")
            made = await call(
                port, "POST", "/api/v1/jobs", alice, {"service": "on-here", "resources": {"memory": "1G"}}
            )
            assert made.code == 201, made.body
            job_id = payload(made)["id"]
            read = payload(await call(port, "GET", f"/api/v1/jobs/{job_id}", alice))
            assert read["run_on"] == {"context": "here", "resources": {"memory": 1024}}
            body, headers = multipart({"service": "on-here", "resources": '{"memory": "512M"}'}, {})
            form = await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)
            assert form.code == 201, form.body
            assert get_info(payload(form)["id"])["run_on"]["resources"] == {"memory": 512}
            for job in (job_id, payload(form)["id"]):
                await asyncio.get_running_loop().run_in_executor(None, cancel, job)

    try:
        asyncio.run(scenario())
    finally:
        services.unregister("on-here")


def test_the_contexts_api_shows_a_scheduler_context_as_its_poller_saw_it(here: Any, r: Any) -> None:
    r.set("moi:scheduler:here", json.dumps({"reachable": False, "error": "ssh: refused <b>", "polled": "2026-12-08"}))
    from moi.web.api_ops import contexts

    seen = contexts(moi.jobs.connections.store())["here"]
    assert seen["scalable"] is False and seen["scheduler"]["reachable"] is False
    assert seen["scheduler"]["where"] == "this machine" and seen["scheduler"]["error"] == "ssh: refused <b>"
    assert os.environ.get("MOI_CONFIG_FP") is None  # the moi commands' setting never leaks into this process


def test_the_job_page_and_the_operations_page_show_the_scheduler(here: dict[str, str], browser: Any) -> None:
    """In headless Chromium against a real ``moi server`` that knows the ``here`` context."""
    from playwright.sync_api import expect

    served = Server(free_port(), env={**os.environ, **here, "MOI_ADMINS": "ops"})
    served.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, served, "ops", "/")
        resources = {"cores": 2, "memory": "128G", "walltime": "12h", "partition": "long"}
        job_id, _, _ = submit("here", "ops", "long", None, system_call, "sleep 600", resources=resources)
        page.goto(f"{served.url}/jobs/{job_id}")
        expect(page.locator(".moi-scheduler")).to_contain_text(re.compile(r"local job \d+ on this machine: RUNNING"))
        expect(page.locator(".moi-resources")).to_have_text("cores=2 memory=128G walltime=12:00:00 partition=long")
        expect(page.locator(".moi-status")).to_have_text("Running")
        cancel(job_id)
        expect(page.locator(".moi-status")).to_have_text("Cancelled")
        page.goto(f"{served.url}/ops")
        here_row = page.locator(".moi-contexts tr", has_text="here")
        expect(here_row).to_contain_text(re.compile(r"local on this machine: reachable, last poll \d{4}-"))
        expect(here_row).to_contain_text("0 pending, 0 running")
    finally:
        context.close()
        served.stop()
