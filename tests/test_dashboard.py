"""The dashboard in headless Chromium against a real ``moi server``: my jobs, a job's page, submit, operations.

Screenshots go to ``$MOI_SCREENSHOTS`` (``MOI_SCREENSHOTS=docs`` refreshes the README's) when it is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.hetatm_service import SAMPLE
from moi import services
from moi.jobs import connections
from moi.services import unloadable
from moi.storage.redis_server import free_port
from tests.browser import Server, log_in, row, submit_cli
from tests.conftest import finished
from tests.test_browser_services import EXAMPLE_YAML


def screenshot(page: Any, name: str) -> None:
    where = os.environ.get("MOI_SCREENSHOTS")
    if where:
        page.screenshot(path=str(Path(where) / name), full_page=True)


@pytest.fixture
def admin_server(r: Any) -> Iterator[Server]:
    """A server that knows the hetatm example service, with ``ops`` as its admin."""
    env = {**os.environ, "MOI_ADMINS": "ops", "MOI_SERVICES": "examples.hetatm_service:Hetatm"}
    server = Server(free_port(), env=env)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_my_jobs_are_live_filtered_sorted_and_a_failed_job_shows_its_traceback(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1280, "height": 720})
    log_in(page, server, "dora", "/")
    failing = submit_cli("dora", "bad input", "raise ValueError('crash and burn')")
    quick = submit_cli("dora", "quick", "return 6 * 7")
    steps = "import time\nfor i in range(1, 4):\n    kwargs['status_update'](f'step {i} of 4'); time.sleep(3)\n"
    slow = submit_cli("dora", "long analysis", steps + "return {'answer': 42, 'unit': 'none'}")

    running = row(page, slow)
    expect(running.locator(".moi-status")).to_have_text(re.compile(r"step \d of 4"))
    expect(running.locator("[role=progressbar]")).to_have_count(1)  # a status that reports a fraction
    expect(running.locator(".moi-engine")).not_to_have_text("")
    expect(running.locator(".moi-duration")).to_have_text(re.compile(r"\d+\.\d s"))
    expect(row(page, failing).locator(".moi-status")).to_have_text("Failed")
    screenshot(page, "dashboard-jobs.png")
    expect(running.locator(".moi-status")).to_have_text("Success")
    expect(row(page, quick).locator(".moi-status")).to_have_text("Success")

    page.select_option("select[name=status]", "Failed")
    expect(page.locator(".moi-row")).to_have_count(1)
    expect(row(page, failing)).to_have_count(1)
    page.select_option("select[name=status]", "")
    page.keyboard.press("/")  # the search field, from the keyboard
    page.keyboard.type("QUICK")
    expect(page.locator(".moi-row")).to_have_count(1)
    page.fill("input[name=q]", "")
    expect(page.locator(".moi-row")).to_have_count(3)
    page.get_by_role("button", name=re.compile("^Name")).click()  # sorted by name, a to z
    expect(page.locator(".moi-row .moi-name").first).to_have_text("bad input")
    page.get_by_role("button", name=re.compile("^Name")).click()
    expect(page.locator(".moi-row .moi-name").first).to_have_text("quick")

    row(page, failing).locator("a.moi-name").click()
    expect(page.locator(".moi-traceback")).to_contain_text("ValueError: crash and burn")
    expect(page.locator(".moi-crumbs a")).to_have_text(["dora"])
    expect(page.locator("button.moi-cancel")).to_have_count(0)  # finished: nothing to cancel
    screenshot(page, "dashboard-failed-job.png")

    page.goto(f"{server.url}/jobs/{slow}")
    expect(page.locator(".moi-result-text")).to_have_text('{\n  "answer": 42,\n  "unit": "none"\n}')
    # Code the CLI ran inside the engine never runs again from the web: the page says so in one line.
    page.get_by_role("button", name="Relaunch").click()
    expect(page.locator(".moi-message")).to_contain_text("relaunch it from the CLI")
    expect(page).to_have_url(re.compile(slow))
    delete = page.get_by_role("button", name="Delete")
    delete.click()  # asks first: nothing is deleted yet
    expect(delete).to_have_text("Delete? (click again to confirm)")
    expect(page).to_have_url(re.compile(slow))
    delete.click()
    expect(page).to_have_url(f"{server.url}/")
    expect(row(page, slow)).to_have_count(0)
    expect(row(page, quick)).to_have_count(1)

    page.goto(f"{server.url}/jobs/00000000-0000-4000-8000-000000000000")
    assert "404" in page.title() or page.locator("body").inner_text().find("404") >= 0

    page.goto(f"{server.url}/")
    page.get_by_role("button", name="log out").click()  # a form that POSTs with the XSRF token
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto(f"{server.url}/")
    expect(page).to_have_url(re.compile(r"/login"))  # logged out: the dashboard sends to the login


def test_the_form_submits_a_service_with_a_file_and_its_page_shows_log_files_and_steps(
    page: Any, admin_server: Server, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    server = admin_server
    structure = tmp_path / "x.pdb"
    structure.write_text(SAMPLE)
    log_in(page, server, "erin", "/submit")
    page.select_option("select[name=service]", "hetatm")
    expect(page.locator("input[name='param:residue']")).to_be_visible()  # drawn from the service's schema
    page.fill("input[name='param:residue']", "ZN")
    page.fill("input[name=name]", "zinc sites")
    page.set_input_files("input[name=input]", str(structure))
    page.get_by_role("button", name="Submit").click()

    expect(page.locator("#moi-job h1 .moi-status")).to_have_text("Success")
    expect(page.locator(".moi-job-name").first).to_have_text("zinc sites")
    expect(page.locator(".moi-log")).to_contain_text("1 structure(s) to read")
    expect(page.locator("a.moi-file-view", has_text="output/hetatm.pdb")).to_have_count(1)
    with page.expect_download() as download:
        page.locator(".moi-file", has_text="output/summary.json").locator("a.moi-file-download").click()
    assert Path(download.value.path()).read_text() == '{"ZN": 1}'

    page.goto(f"{server.url}/submit")
    page.select_option("select[name=service]", "hetatm")
    bad = tmp_path / "bad.pdb"
    bad.write_text("not a structure")
    page.set_input_files("input[name=input]", str(bad))
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".moi-message")).to_contain_text("refused by validator pdb")  # one line, nothing stored

    services.load_into(connections.store(), EXAMPLE_YAML.read_text(), "services.yaml")
    job_id, _, _ = services.submit("wordcount", "erin", {"min_length": 4}, files={"text.txt": b"one two three four"})
    page.goto(f"{server.url}/jobs/{job_id}")
    expect(page.locator("#moi-job h1 .moi-status")).to_have_text("Success")
    expect(page.locator(".moi-step .moi-step-name")).to_have_text(["words", "count"])
    expect(page.locator(".moi-step .moi-status")).to_have_text(["Success", "Success"])


def test_operations_show_queues_workers_and_everyone_to_an_admin_only(page: Any, admin_server: Server) -> None:
    from playwright.sync_api import expect

    server = admin_server
    theirs = submit_cli("frank", "franks job", "return 1")
    failing = submit_cli("frank", "franks failure", "raise RuntimeError('no')")
    finished(theirs), finished(failing)
    log_in(page, server, "ops", "/")
    page.get_by_role("link", name="Operations").click()
    expect(page.locator("#moi-ops")).to_have_attribute("data-loaded", "true")
    contexts = page.locator(".moi-contexts tbody tr")
    expect(contexts).to_have_count(1)
    expect(contexts.locator(".moi-state")).to_have_text("online")
    expect(page.locator(".moi-workers .moi-state[data-state=idle]")).not_to_have_count(0)
    expect(page.locator(".moi-chart-note")).to_contain_text(re.compile(r"[1-9]\d* succeeded, [1-9]\d* failed"))
    expect(page.locator(".moi-chart rect.moi-bar-failed")).not_to_have_count(0)
    expect(row(page, theirs).locator(".moi-name")).to_have_text("franks job")  # another user's job
    page.set_viewport_size({"width": 1280, "height": 900})
    screenshot(page, "dashboard-operations.png")
    # The test cluster has a cluster file: moi could add its engines (not clicked: the session shares it).
    expect(contexts.get_by_role("button", name="Add engine")).to_have_count(1)
    # A service no engine could load (tests/test_retention_hooks.py makes one for real): shown with its error.
    expect(page.locator(".moi-unloadable-box")).to_be_hidden()
    why = "ModuleNotFoundError: No module named 'mymodule'"
    unloadable.record(connections.store(), "mymodule:MyService", "retain", why, "engine h:1", unloadable.ENGINE)
    expect(page.locator(".moi-unloadable tbody tr td")).to_contain_text(["retain", "mymodule:MyService", "engine h:1"])
    expect(page.locator(".moi-unloadable tbody tr")).to_contain_text(why)

    other = page.context.browser.new_context().new_page()
    log_in(other, server, "frank", "/")
    expect(other.get_by_role("link", name="Operations")).to_have_count(0)
    answer = other.goto(f"{server.url}/ops")
    assert answer is not None and answer.status == 403
    expect(other.locator("#moi-not-admin")).to_contain_text("for admins only")  # a page that says why
    assert other.request.get(f"{server.url}/api/v1/throughput").status == 403
    other.goto(f"{server.url}/jobs/{theirs}")
    expect(other.locator("#moi-job h1 .moi-status")).to_have_text("Success")
    stranger = page.context.browser.new_context().new_page()
    log_in(stranger, server, "gina", "/")
    assert stranger.goto(f"{server.url}/jobs/{theirs}").status == 404  # not hers: as if there were none


def test_five_thousand_jobs_stay_usable_drawn_as_they_scroll_into_view(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    from moi.jobs.batch import submit_many
    from tests import jobs

    ids, _, batch = submit_many("default", "hana", "bulk", None, jobs.add, [(index, 1) for index in range(5000)])
    batch.wait(timeout=300)
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, server, "hana", "/")
    expect(page.locator(".moi-count")).to_have_text("5000 of 5000 jobs")
    drawn = page.locator("#moi-jobs .moi-row")
    assert drawn.count() < 80  # only the rows in view, and a few beyond
    top = set(drawn.evaluate_all("rows => rows.map(r => r.dataset.id)"))
    page.locator("#moi-jobs").evaluate("viewport => { viewport.scrollTop = viewport.scrollHeight; }")
    expect(drawn.first).not_to_have_attribute("data-id", re.compile("|".join(sorted(top))))
    assert drawn.count() < 80

    page.get_by_role("button", name=re.compile("^Name")).click()
    page.locator("#moi-jobs").evaluate("viewport => { viewport.scrollTop = 0; }")
    expect(drawn.first.locator(".moi-name")).to_have_text("bulk [0]")
    page.fill("input[name=q]", "bulk [4321]")
    expect(page.locator(".moi-count")).to_have_text("1 of 5000 jobs")
    expect(row(page, ids[4321]).locator(".moi-status")).to_have_text("Success")
    page.fill("input[name=q]", "")
    late = submit_cli("hana", "late one", "return 1")
    expect(page.locator(".moi-count")).to_have_text("5001 of 5001 jobs")  # still live
    page.fill("input[name=q]", "late")  # sorted by name, it is drawn at the bottom, out of view
    expect(row(page, late).locator(".moi-status")).to_have_text("Success")


def test_dark_mode_follows_the_system_and_the_pages_work_from_the_keyboard(browser: Any, server: Server) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    try:
        job_id = submit_cli("ines", "by keyboard", "return 1")
        finished(job_id)
        log_in(page, server, "ines", "/")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 26)", background  # the dark palette, not the light one
        page.keyboard.press("Tab")
        expect(page.locator(".moi-skip")).to_be_focused()  # the first stop: skip to the content
        page.locator(f'.moi-row[data-id="{job_id}"] a.moi-name').focus()
        page.keyboard.press("Enter")  # a job's name is a real link
        expect(page).to_have_url(re.compile(f"/jobs/{job_id}$"))
        expect(page.locator("#moi-job h1 .moi-status")).to_have_text("Success")
    finally:
        context.close()
