"""The dashboard's smaller defects, in headless Chromium against a real ``moi server``: the API reference
renders; no page logs a console error; Delete asks first; a relaunch and its original link each other;
the operations page says who may see it; a plain command's form has no parameters; a shell command's
result reads as its output."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from moi.compute.text_jobs import system_call
from moi.job import submit
from moi.storage.redis_server import free_port
from tests import files_jobs
from tests.browser import Server, log_in, quiet, row, submit_cli
from tests.conftest import finished

SHELL = "echo out here; echo trouble >&2"


@pytest.fixture
def server(r: Any) -> Iterator[Server]:
    """The session's kind of server, with ``ops`` an admin and ``dora`` granted code (shell commands)."""
    server = Server(free_port(), env={**os.environ, "MOI_ADMINS": "ops", "MOI_CODE_USERS": "dora"})
    server.start()
    yield server
    server.stop()


def test_the_api_reference_renders_its_operations(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    with quiet(page):
        page.goto(f"{server.url}/api/docs")
        expect(page.locator(".opblock").first).to_be_visible()
        expect(page.locator(".opblock-summary-path", has_text="/api/v1/jobs").first).to_be_visible()


def test_no_page_logs_a_console_error(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    plain = submit_cli("dora", "no files", "return 1")
    with_files, _, _ = submit("default", "dora", "with files", None, files_jobs.use_files, files={"a.txt": b"x"})
    assert finished(plain)["status"] == finished(with_files)["status"] == "Success"
    with quiet(page):
        log_in(page, server, "dora", "/")
        expect(row(page, plain)).to_have_count(1)
    for job_id, files in ((plain, ["No files."]), (with_files, re.compile("input/a.txt"))):
        with quiet(page):
            page.goto(f"{server.url}/jobs/{job_id}")
            expect(page.locator("#moi-job")).to_have_attribute("data-connected", "true")
            expect(page.locator("#moi-job h1 .moi-status")).to_have_text("Success")
            expect(page.locator(".moi-file-list li").first).to_have_text(files[0] if isinstance(files, list) else files)
    with quiet(page):
        page.goto(f"{server.url}/submit")
        expect(page.locator("select[name=service] option")).to_have_count(1)  # the services are read: none here
        # A plain command: no parameters box, no input files.
        expect(page.locator(".moi-command")).to_be_visible()
        expect(page.locator(".moi-params")).to_be_hidden()
        expect(page.locator(".moi-inputs")).to_be_hidden()

    answer = page.goto(f"{server.url}/ops")  # dora is no admin: a page that says what this is (a 403 is logged)
    assert answer is not None and answer.status == 403
    expect(page.locator("#moi-not-admin")).to_contain_text("for admins only")
    expect(page.locator("#moi-not-admin")).to_contain_text("[moi] admins")

    admin = page.context.browser.new_context().new_page()
    with quiet(admin):
        admin.goto(f"{server.url}/login")
        expect(admin.locator("input[name=user]")).to_be_visible()
    with quiet(admin):
        log_in(admin, server, "ops", "/ops")
        expect(admin.locator("#moi-ops")).to_have_attribute("data-loaded", "true")
    admin.context.close()


def test_a_shell_command_reads_as_output_and_a_relaunch_links_both_ways(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    log_in(page, server, "dora", "/")
    made = page.evaluate(f"moiDashboard.api('POST', '/jobs', {{cmd: {SHELL!r}, cmd_type: 'system'}})")
    original = made["id"]
    assert finished(original)["status"] == "Success"
    with quiet(page):
        page.goto(f"{server.url}/jobs/{original}")
        expect(page.locator(".moi-stdout")).to_have_text("out here\n")
        expect(page.locator(".moi-stderr")).to_have_text("trouble\n")
        expect(page.locator(".moi-returncode")).to_have_text("0")
        expect(page.locator(".moi-result-text")).to_be_hidden()
        expect(page.locator(".moi-lineage")).to_be_hidden()  # no relaunch yet, and none of another

    local, _, _ = submit("default", "dora", "from the CLI", None, system_call, SHELL)  # as `moi submit` sends one
    assert finished(local)["status"] == "Success"
    page.goto(f"{server.url}/jobs/{local}")
    expect(page.locator(".moi-stdout")).to_have_text("out here\n")
    page.goto(f"{server.url}/jobs/{original}")

    page.get_by_role("button", name="Relaunch").click()
    expect(page).not_to_have_url(re.compile(original))
    relaunched = page.url.rsplit("/", 1)[1]
    expect(page.locator(".moi-lineage")).to_have_text(f"relaunch of {original[:8]}")
    expect(page.locator(".moi-stdout")).to_have_text("out here\n")  # what ran again is still a shell command
    page.locator("a.moi-relaunch-of").click()
    expect(page).to_have_url(f"{server.url}/jobs/{original}")
    expect(page.locator(".moi-lineage")).to_have_text(f"relaunched as {relaunched[:8]}")
    expect(page.locator("a.moi-relaunched-as")).to_have_attribute("href", f"/jobs/{relaunched}")

    # Delete, in the list as on a job's page, asks first.
    page.goto(f"{server.url}/")
    delete = row(page, original).locator("button.moi-delete")
    delete.click()
    expect(delete).to_have_text("Delete? (click again to confirm)")
    expect(row(page, original)).to_have_count(1)
    delete.click()
    expect(row(page, original)).to_have_count(0)
    expect(row(page, relaunched)).to_have_count(1)
