"""moi against a Redis that is not a plain local one: TLS with a password, and Sentinel through a failover.

The jobs run on the session's cluster; every job carries its Redis URL to the engines,
so they too speak TLS, or ask the sentinel where the master is.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moi.storage.redis_server import TlsFiles, free_port, start_redis
from tests.browser import Server, log_in, row
from tests.certs import make_tls_files, reason_no_tls_redis
from tests.conftest import require, run_moi
from tests.sentinel import SentinelSet

WAIT_MS = 120_000  # for what the cluster and a failover do; nothing here is timed


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, TlsFiles]]:
    """A Redis that speaks TLS only and asks for a password: ``(rediss URL, password, its TLS files)``."""
    require(reason_no_tls_redis(), "TLS Redis tests")
    directory = tmp_path_factory.mktemp("tls-redis")
    files = make_tls_files(directory / "tls", ["127.0.0.1"])
    password = secrets.token_urlsafe(24)
    proc, url = start_redis(directory / "redis", password=password, tls=files)
    yield url, password, files
    proc.terminate()
    proc.wait(10)


def submitted(user: str, cmd: str, env: dict[str, str]) -> str:
    done = run_moi("submit", "--user", user, "--cmd", cmd, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("Submitted job id: ")[1].strip()


def test_jobs_run_and_pages_stay_live_through_a_redis_over_tls(tls: tuple[str, str, TlsFiles], browser: Any) -> None:
    from playwright.sync_api import expect

    url, password, _ = tls
    env = {"MOI_REDIS_URL": url}
    done = run_moi("submit", "--cmd", "return 1", "--block", env=env)
    assert done.returncode == 0, done.stderr
    assert "Success" in done.stdout

    status = run_moi("status", env=env)
    assert status.returncode == 0, status.stderr
    assert f"configured redis: {url.replace(password, '***')}" in status.stdout  # rediss://, the CA named
    assert password not in status.stdout + status.stderr

    server = Server(free_port(), env={**os.environ, **env})
    server.start()
    page = browser.new_context().new_page()
    try:
        log_in(page, server, "tina")
        job_id = submitted("tina", "return 2", env)
        expect(row(page, job_id).locator(".moi-status")).to_have_text("Success", timeout=WAIT_MS)
    finally:
        page.context.close()
        server.stop()


def test_a_redis_url_that_cannot_reach_the_tls_redis_is_one_line(
    tls: tuple[str, str, TlsFiles], tmp_path: Path
) -> None:
    url, password, files = tls
    stranger = make_tls_files(tmp_path / "other", ["127.0.0.1"])  # a CA that did not sign the server's certificate
    cases = {
        url.replace(str(files.ca), str(stranger.ca)): "certificate verify failed",
        url.replace("rediss://", "redis://", 1): "ssl_* options need TLS: write rediss:// instead of redis://",
        url.split("?")[0].replace("rediss://", "redis://", 1): "unreachable",  # plain to a TLS port
        url.replace("rediss://", "http://", 1): "a Redis URL starts redis://, rediss:// (TLS) or redis+sentinel://",
    }
    for bad_url, expected in cases.items():
        done = run_moi("submit", "--cmd", "return 1", env={"MOI_REDIS_URL": bad_url}, timeout=60)
        assert done.returncode != 0, bad_url
        assert expected in done.stderr, (bad_url, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert password not in done.stderr


@pytest.mark.slow
def test_jobs_go_on_when_the_sentinels_master_is_killed(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import expect

    with SentinelSet(tmp_path / "sentinel", secrets.token_urlsafe(24)) as redis_set:
        env = {"MOI_REDIS_URL": redis_set.url}
        server = Server(free_port(), env={**os.environ, **env})
        server.start()
        page = browser.new_context().new_page()
        try:
            log_in(page, server, "sol")
            commands = tmp_path / "commands.txt"
            commands.write_text("sleep 6\n" * 4)  # two run at once on the session's two engines, two wait
            made = run_moi("submit", "--user", "sol", "--each", str(commands), env=env)
            assert made.returncode == 0, made.stderr
            ids = [line.split(": ")[1] for line in made.stdout.splitlines() if line.startswith("Submitted job id: ")]
            expect(row(page, ids[0]).locator(".moi-status")).to_have_text("Running", timeout=WAIT_MS)

            redis_set.kill_master()  # SIGKILL, with jobs running and queued
            redis_set.wait_for_failover()  # the sentinel names the replica master

            late = submitted("sol", "return 3", env)  # submitted after the failover, through the sentinel
            for job_id in [*ids, late]:
                expect(row(page, job_id).locator(".moi-status")).to_have_text("Success", timeout=WAIT_MS)
            promoted = redis_set.client("replica")
            assert [json.loads(text)["status"] for text in promoted.mget([*ids, late])] == ["Success"] * 5
            assert promoted.scard("moi:running") == 0
            promoted.close()
        finally:
            page.context.close()
            server.stop()
