"""The live list under faults, in headless Chromium: Cancel from the page, a server restart mid-job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import test_browser
from tests.test_browser import Server, free_port, log_in, row, submit_cli

browser = test_browser.browser  # the same headless Chromium fixture


@pytest.fixture
def web_server(r: Any) -> Iterator[Server]:
    server = Server(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def web_page(browser: Any, web_server: Server) -> Iterator[Any]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def test_cancel_button_cancels_a_running_job_only_unfinished_rows_have_one(web_page: Any, web_server: Server) -> None:
    from playwright.sync_api import expect

    log_in(web_page, web_server, "grace")
    finished = submit_cli("grace", "quick", "return 1")
    running = submit_cli("grace", "long", "import time; time.sleep(300)")
    expect(row(web_page, finished).locator(".moi-status")).to_have_text("Success")
    expect(row(web_page, running).locator(".moi-status")).to_have_text("Running")
    expect(row(web_page, finished).locator("button.moi-cancel")).to_have_count(0)

    row(web_page, running).locator("button.moi-cancel").click()
    expect(row(web_page, running).locator(".moi-status")).to_have_text("Cancelled")
    expect(row(web_page, running).locator("button.moi-cancel")).to_have_count(0)


def test_server_restart_mid_job_loses_nothing(web_page: Any, web_server: Server) -> None:
    from playwright.sync_api import expect

    jobs_list = log_in(web_page, web_server, "heidi")
    code = "import time; kwargs['status_update']('working'); time.sleep(4); return 'done'"
    job_id = submit_cli("heidi", "spans a restart", code)
    expect(row(web_page, job_id).locator(".moi-status")).to_have_text("working")

    web_server.stop()  # the job finishes while no server runs
    expect(jobs_list).to_have_attribute("data-connected", "false")
    web_server.start()
    expect(jobs_list).to_have_attribute("data-connected", "true")
    expect(row(web_page, job_id).locator(".moi-status")).to_have_text("Success")
    expect(row(web_page, job_id)).to_have_count(1)
