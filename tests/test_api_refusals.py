"""Requests that once answered 500, and the ways a service once left its job directory: each is now a 4xx
with one line, or a refusal when the service is loaded; ``moi status`` never starts the runtime; an operator's
setting with digits of another script is a one-line ConfigError.

Real requests to a real moi server on 127.0.0.1, real service jobs on the session's cluster, the real CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPResponse

from examples.hetatm_service import SAMPLE, Hetatm
from moi import files, services
from moi.core.config import build_settings
from moi.core.info import Status
from moi.errors import ConfigError, ServiceDefinitionError
from moi.services.documents import StepService
from moi.services.steps import Step
from moi.storage import redis_clients
from tests.conftest import finished, run_moi
from tests.test_api import call, multipart, token_for
from tests.test_examples_and_runtime import processes_mentioning
from tests.test_file_routes import a_job_with_files
from tests.test_relay_security import server

MANY_DIGITS = "9" * 5000  # past the 4,300 digits int() takes


def one_line(answer: HTTPResponse) -> dict[str, Any]:
    """The answer's ``{"error", "code"}``, checked to be one line and no traceback."""
    assert answer.headers["Content-Type"] == "application/json", answer.body
    body = json.loads(answer.body)
    assert set(body) == {"error", "code"} and "\n" not in body["error"], body
    assert b"Traceback" not in answer.body
    return body


def test_odd_numbers_huge_ranges_long_names_and_head_of_a_log_get_a_4xx_with_one_line(r, tmp_path: Path) -> None:
    services.register(Hetatm)
    alice, bob = token_for("alice"), token_for("bob")
    job_id = a_job_with_files("alice", tmp_path)
    (Path(files.directory_of(job_id)) / "framework.log").write_text("a line\n")

    async def scenario() -> None:
        async with server() as port:
            # '²' passes str.isdigit and fails int(); '٣' passes both; 5,000 digits pass isdigit and fail int()
            for query in ("limit=²", "limit=٣", "cursor=²", f"limit={MANY_DIGITS}", f"cursor={MANY_DIGITS}"):
                answer = await call(port, "GET", f"/api/v1/jobs?{query}", alice)
                assert (answer.code, one_line(answer)["code"]) == (400, "bad_request"), query

            ranges = (f"bytes={MANY_DIGITS}-", f"bytes=-{MANY_DIGITS}", f"bytes=0-{MANY_DIGITS}", "bytes=²-3")
            routes = (f"/api/v1/jobs/{job_id}/files/input/notes.txt", f"/moi-files/{job_id}/input/notes.txt")
            for asked in ranges:
                for route in routes:
                    answer = await call(port, "GET", route, alice, headers={"Range": asked})
                    assert (answer.code, answer.headers["Content-Range"]) == (416, "bytes */10"), (route, asked)
                    assert one_line(answer)["code"] == "bad_range"

            for name in ("x" * 300 + ".pdb", "é" * 128 + ".pdb"):  # past 255 bytes: the file system's limit
                body, headers = multipart({"service": "hetatm"}, {name: SAMPLE.encode()})
                answer = await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)
                assert (answer.code, one_line(answer)["code"]) == (422, "invalid"), answer.body
            body, headers = multipart({"service": "hetatm", "priority": "²"}, {"x.pdb": SAMPLE.encode()})
            answer = await call(port, "POST", "/api/v1/jobs", alice, body, headers=headers)
            assert (answer.code, one_line(answer)["code"]) == (422, "invalid"), answer.body

            head = await call(port, "HEAD", f"/api/v1/jobs/{job_id}/log", alice)
            assert (head.code, head.body, head.headers["Content-Length"]) == (200, b"", "7")
            assert (await call(port, "HEAD", f"/api/v1/jobs/{job_id}/log", bob)).code == 404
            assert (await call(port, "HEAD", f"/api/v1/jobs/{job_id}/files", alice)).code == 200
            assert (await call(port, "HEAD", f"/api/v1/jobs/{job_id}/files/input/notes.txt", bob)).code == 404

    try:
        asyncio.run(scenario())
    finally:
        services.unregister("hetatm")


REFUSED_STEPS = (
    "{name: ../../x, run: 'true'}",
    "{name: a/b, run: 'true'}",
    "{name: .., run: 'true'}",
    "{name: 'x\\n', run: 'true'}",
    "{run: 'true', outputs: ['../../*']}",
    "{run: 'true', outputs: [/etc/passwd]}",
    "{run: 'true', outputs: [output/../../../x]}",
    "{run: 'true', exit_codes: {'²': success}}",  # not a place, but once a ValueError (a traceback) at load
)


def test_a_step_name_or_output_that_leaves_the_job_directory_is_refused_at_load_and_at_use(
    r, tmp_path: Path
) -> None:
    for step in REFUSED_STEPS:
        with pytest.raises(ServiceDefinitionError) as refused:
            services.documents.load(f"services:\n  - name: escape\n    steps: [{step}]\n", "escape.yaml")
        assert "\n" not in str(refused.value), step

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"services:\n  - name: escape\n    steps: [{REFUSED_STEPS[0]}]\n")
    loaded = run_moi("services", "load", str(bad))
    assert (loaded.returncode, loaded.stderr.count("\n")) == (1, 1), loaded.stderr
    assert "its name is letters, digits" in loaded.stderr and not r.exists("moi:services")

    class Escape(StepService):  # a step service written in Python is checked as a YAML one is
        name = "escape"
        steps = (Step("../../x", "true"),)

    with pytest.raises(ServiceDefinitionError):
        services.register(Escape)
    definition = {"name": "escape", "steps": [{"name": "../../x", "run": "true"}]}
    r.hset("moi:services", "escape", json.dumps(definition))  # written straight into Redis: refused when read
    assert "escape" not in services.known()

    # At use: an output found only through a link out of the job directory does not count
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the job's")
    step = f"{{run: 'ln -s {outside} output/out', outputs: [output/out/*]}}"
    linked = f"services:\n  - name: linked\n    steps: [{step}]\n"
    services.load_into(services.registry.connections.store(), linked, "linked.yaml")
    job = finished(services.submit("linked", "alice", {})[0])
    assert job["status"] == Status.FAILED
    assert job["result"] == "step 'step1' failed: its outputs ['output/out/*'] are missing (fail)"


def test_status_never_starts_the_embedded_runtime(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items() if key not in ("MOI_REDIS_URL", "MOI_CONTEXTS")}
    env.update(MOI_STATE_DIR=str(state))

    def moi(command: str) -> subprocess.CompletedProcess[str]:  # not run_moi: it keeps the session's MOI_REDIS_URL
        return subprocess.run([sys.executable, "-m", "moi", command], env=env, capture_output=True, text=True)

    try:
        for command in ("status", "down", "status"):
            ran = moi(command)
            assert ran.returncode == 0, ran.stderr
        assert "local runtime: not running" in ran.stdout
        assert "context default: offline (the local runtime is not running)" in ran.stdout
        assert processes_mentioning(str(state)) == [] and not (state / "runtime.json").exists()
    finally:
        moi("down")  # should status ever start one again, it is not left running


def test_an_operator_setting_with_digits_of_another_script_is_a_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("MOI_FETCH_ALLOW", "127.0.0.1:²"), ("MOI_SCHEDULER", "leastload+²")):
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            with pytest.raises(ConfigError) as refused:
                build_settings()
            assert "\n" not in str(refused.value), name
    for url in ("redis://:pw@127.0.0.1:²/0", "redis+sentinel://:pw@127.0.0.1:²/main", "redis+sentinel://h:1/main/²"):
        with pytest.raises(ConfigError) as refused:
            redis_clients.sync_client(url)
        assert "\n" not in str(refused.value) and "pw" not in str(refused.value), url
