"""The live list under faults, in headless Chromium: Cancel from the page, a server restart mid-job."""

from __future__ import annotations

from typing import Any

from tests.browser import Server, log_in, row, submit_cli


def test_cancel_button_cancels_a_running_job_only_unfinished_rows_have_one(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    log_in(page, server, "grace")
    finished = submit_cli("grace", "quick", "return 1")
    running = submit_cli("grace", "long", "import time; time.sleep(300)")
    expect(row(page, finished).locator(".moi-status")).to_have_text("Success")
    expect(row(page, running).locator(".moi-status")).to_have_text("Running")
    expect(row(page, finished).locator("button.moi-cancel")).to_have_count(0)

    row(page, running).locator("button.moi-cancel").click()
    expect(row(page, running).locator(".moi-status")).to_have_text("Cancelled")
    expect(row(page, running).locator("button.moi-cancel")).to_have_count(0)


def test_server_restart_mid_job_loses_nothing(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    jobs_list = log_in(page, server, "heidi")
    code = "import time; kwargs['status_update']('working'); time.sleep(4); return 'done'"
    job_id = submit_cli("heidi", "spans a restart", code)
    expect(row(page, job_id).locator(".moi-status")).to_have_text("working")

    server.stop()  # the job finishes while no server runs
    expect(jobs_list).to_have_attribute("data-connected", "false")
    server.start()
    expect(jobs_list).to_have_attribute("data-connected", "true")
    expect(row(page, job_id).locator(".moi-status")).to_have_text("Success")
    expect(row(page, job_id)).to_have_count(1)


def test_a_paused_job_shows_paused_live_and_runs_once_resumed(page: Any, server: Server, tmp_path: Any) -> None:
    from playwright.sync_api import expect

    from tests.conftest import finished, run_moi

    log_in(page, server, "ivan")
    release = tmp_path / "release"
    wait = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)"
    holders = [submit_cli("holder", "hold", wait) for _ in range(2)]  # both engines busy, another user's
    queued = submit_cli("ivan", "waits its turn", "return 7")
    expect(row(page, queued).locator(".moi-status")).to_have_text("Queued")

    assert run_moi("pause", "--user", "ivan").returncode == 0
    expect(row(page, queued).locator(".moi-status")).to_have_text("Paused")
    release.touch()  # engines free: a paused job still waits
    for holder in holders:
        assert finished(holder)["status"] == "Success"
    expect(row(page, queued).locator(".moi-status")).to_have_text("Paused")
    assert run_moi("resume", "--user", "ivan").returncode == 0
    expect(row(page, queued).locator(".moi-status")).to_have_text("Success")
