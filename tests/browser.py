"""Headless Chromium and a real ``moi server`` for the browser tests: fixtures and helpers.

Chromium is Debian's ``chromium`` package, installed here when missing and we
are root; playwright drives it and never downloads a browser of its own. In
CI (``CI=true``) these tests run, never skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from moi.storage.redis_server import free_port
from tests.conftest import ROOT, run_moi

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # how long a locator waits for the page to show something


def chromium_path() -> str:
    if not os.path.exists(CHROMIUM) and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update && apt-get install -y chromium", shell=True, check=True)
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: install the Debian package chromium (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Server:
    """``moi server --port N`` (or another command) in a subprocess, as a user starts it."""

    def __init__(
        self, port: int, command: tuple[str, ...] = ("-m", "moi", "server"), env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.command = command
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *self.command, "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it accepts connections
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "server exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"moi server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            # Up to a minute: at exit a server leaves work with the controller for jobs still queued.
            self.proc.wait(60)
            self.proc = None


@pytest.fixture
def server(r: Any) -> Iterator[Server]:
    server = Server(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context()
    yield context.new_page()
    context.close()
    context.close()


def log_in(page: Any, server: Server, user: str, path: str = "/list") -> Any:
    """Log in as ``user`` and land on ``path``: moi.js's live list by default, ``/`` for the dashboard."""
    from playwright.sync_api import expect

    page.goto(server.url + path)
    page.fill("input[name=user]", user)
    page.click("button[type=submit]")
    jobs_list = page.locator("#moi-jobs")
    if path in ("/", "/list"):  # the pages with a live list: connected
        expect(jobs_list).to_have_attribute("data-connected", "true")
    return jobs_list


def submit_cli(user: str, name: str, cmd: str) -> str:
    done = run_moi("submit", "--user", user, "--name", name, "--cmd", cmd)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("Submitted job id: ")[1].strip()


def row(page: Any, job_id: str) -> Any:
    return page.locator(f'.moi-row[data-id="{job_id}"]')


@contextmanager
def quiet(page: Any) -> Iterator[list[str]]:
    """Fail unless ``page`` logs no console error and throws no uncaught error while the block runs (a
    request answered 4xx or 5xx is a console error too). The block should end on a state the page reaches
    once it has loaded what it asks for."""
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"{page.url}: console: {message.text} ({message.location.get('url', '')})")

    def on_page_error(error: Any) -> None:
        errors.append(f"{page.url}: uncaught: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    try:
        yield errors
        page.wait_for_load_state("networkidle")  # what the page still asks for has answered
    finally:
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_page_error)
    assert not errors, errors
