"""moi.js in headless Chromium against a real ``moi server`` (real Redis and cluster).

Chromium is Debian's ``chromium`` package, installed here when missing and we
are root; playwright drives it and never downloads a browser of its own. In
CI (``CI=true``) these tests run, never skip.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from moi.job import submit
from tests import jobs
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``moi server --port N`` (or another command) in a subprocess, as a user starts it."""

    def __init__(self, port: int, command: tuple[str, ...] = ("-m", "moi.cli", "server")) -> None:
        self.port = port
        self.command = command
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *self.command, "--port", str(self.port)],
            cwd=ROOT,
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
            self.proc.wait(30)
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
    page = context.new_page()
    yield page
    context.close()


def log_in(page: Any, server: Server, user: str) -> Any:
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    page.fill("input[name=user]", user)
    page.click("button[type=submit]")
    jobs_list = page.locator("#moi-jobs")
    expect(jobs_list).to_have_attribute("data-connected", "true")
    return jobs_list


def submit_cli(user: str, name: str, cmd: str) -> str:
    done = run_moi("submit", "--user", user, "--name", name, "--cmd", cmd)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("Submitted job id: ")[1].strip()


def row(page: Any, job_id: str) -> Any:
    return page.locator(f'.moi-row[data-id="{job_id}"]')


def test_cli_job_appears_and_finishes_live(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    log_in(page, server, "carol")
    # Record every status a row shows, and mark the page: a reload would lose both.
    page.evaluate(
        """() => {
        window.seen = [];
        new MutationObserver(() => document.querySelectorAll('.moi-row').forEach(r => {
            const s = r.querySelector('.moi-status').textContent;
            if (window.seen[window.seen.length - 1] !== s) window.seen.push(s);
        })).observe(document.getElementById('moi-jobs'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    code = "kwargs['status_update']('half way'); import time; time.sleep(2); return 42"
    job_id = submit_cli("carol", "live job", code)
    expect(row(page, job_id).locator(".moi-status")).to_have_text("Success")
    expect(row(page, job_id).locator(".moi-name")).to_have_text("live job")
    seen = page.evaluate("window.seen")
    assert seen[-1] == "Success" and "half way" in seen, seen
    order = {"Queued": 0, "Running": 1, "half way": 2, "Success": 3}
    assert [order[s] for s in seen] == sorted(order[s] for s in seen), seen

    failing = submit_cli("carol", "fails", "return float('crash and burn')")
    expect(row(page, failing).locator(".moi-status")).to_have_text("Failed")
    linked, _, _ = submit("default", "carol", "with a result page", "/result", jobs.add, 1, 2)
    link = row(page, linked).locator("a.moi-result")
    expect(link).to_have_attribute("href", f"/result/{linked}")
    if os.environ.get("MOI_SCREENSHOT"):
        page.set_viewport_size({"width": 900, "height": 420})
        page.screenshot(path=os.environ["MOI_SCREENSHOT"])

    row(page, failing).locator("button.moi-remove").click()
    expect(row(page, failing)).to_have_count(0)
    expect(page.locator(".moi-row")).to_have_count(2)
    assert run_moi("job", "--job-id", failing).returncode == 1  # gone from Redis too


def test_server_restart_resyncs_without_duplicates(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    jobs_list = log_in(page, server, "dave")
    first = submit_cli("dave", "before restart", "return 1")
    expect(row(page, first).locator(".moi-status")).to_have_text("Success")

    server.stop()
    expect(jobs_list).to_have_attribute("data-connected", "false")
    while_down = submit_cli("dave", "while down", "return 2")
    server.start()
    expect(jobs_list).to_have_attribute("data-connected", "true")
    after = submit_cli("dave", "after restart", "return 3")
    for job_id in (first, while_down, after):
        expect(row(page, job_id).locator(".moi-status")).to_have_text("Success")
        expect(row(page, job_id)).to_have_count(1)
    expect(page.locator(".moi-row")).to_have_count(3)


def test_job_name_is_text_not_html(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, server, "<b>eve</b>")
    name = "<img src=x onerror=alert(1)>"
    job_id = submit_cli("<b>eve</b>", name, "return '<script>alert(2)</script>'")
    expect(row(page, job_id).locator(".moi-status")).to_have_text("Success")
    expect(row(page, job_id).locator(".moi-name")).to_have_text(name)
    expect(page.locator("#moi-user")).to_have_text("<b>eve</b>")
    assert page.locator("img").count() == 0 and page.locator("#moi-jobs b, h1 b").count() == 0
    assert dialogs == []


def test_example_webserver(browser: Any, r: Any) -> None:
    from playwright.sync_api import expect

    example = Server(free_port(), (str(ROOT / "examples" / "webserver.py"),))
    example.start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(example.url + "/")
        page.fill("input[name=user]", "frank")
        page.click("form button")
        expect(page.locator("#jobs")).to_have_attribute("data-connected", "true")
        page.click("#hello")
        hello_row = page.locator(".moi-row", has_text="The hello job")
        expect(hello_row.locator(".moi-status")).to_have_text(re.compile(r"saying hello: step \d of 4"))
        expect(hello_row.locator(".moi-status")).to_have_text("Success")
        hello_row.locator("a", has_text="see the result").click()
        expect(page.locator("#result")).to_have_text('"hi!"')
    finally:
        context.close()
        example.stop()
