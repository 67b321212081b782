"""moi.js in headless Chromium against a real ``moi server`` (real Redis and cluster).

Chromium is Debian's ``chromium`` package, installed when missing and we are
root (tests/browser.py); playwright drives it and never downloads a browser of
its own. In CI (``CI=true``) these tests run, never skip.
"""

from __future__ import annotations

import os
import re
from typing import Any

from moi.job import submit
from moi.storage.redis_server import free_port
from tests import jobs
from tests.browser import Server, log_in, row, submit_cli
from tests.conftest import ROOT, run_moi


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
    linked, _, _ = submit("default", "carol", "with a result page", "/jobs", jobs.add, 1, 2)  # url/ID: its page
    link = row(page, linked).locator("a.moi-result")
    expect(link).to_have_attribute("href", f"/jobs/{linked}")
    if os.environ.get("MOI_SCREENSHOT"):
        page.set_viewport_size({"width": 900, "height": 420})
        page.screenshot(path=os.environ["MOI_SCREENSHOT"])

    row(page, failing).locator("button.moi-delete").click()
    expect(row(page, failing).locator("button.moi-delete")).to_have_text("Delete? (click again to confirm)")
    row(page, failing).locator("button.moi-delete").click()
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
