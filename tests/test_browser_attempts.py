"""A job's time limit and attempts on its page, live, in headless Chromium against a real ``moi server``."""

from __future__ import annotations

import re
from typing import Any

from moi.job import submit
from tests.browser import Server, log_in
from tests.retry_jobs import fails_until


def test_a_retried_job_shows_its_limit_its_next_attempt_and_the_earlier_tracebacks(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    log_in(page, server, "erin", "/")
    job_id, _, handle = submit(
        "default", "erin", "flaky fetch", None, fails_until, 3, time_limit="15m", retries=3, backoff="4s"
    )
    page.goto(f"{server.url}/jobs/{job_id}")
    policy = page.locator(".moi-policy")
    expect(policy).to_contain_text("time limit 15m")
    expect(policy).to_contain_text(re.compile(r"attempt 2 of 4 · next attempt at .+"))  # waiting for its retry
    expect(page.locator(".moi-attempts .moi-attempt")).to_have_count(1)
    expect(page.locator(".moi-attempts .moi-attempt").first).to_contain_text("OSError: attempt 1 failed on purpose")

    expect(page.locator(".moi-status")).to_have_text("Success")
    expect(policy).to_have_text("time limit 15m · attempt 3 of 4")
    expect(page.locator(".moi-attempts .moi-attempt")).to_have_count(2)
    expect(page.locator(".moi-attempts .moi-attempt").nth(1)).to_contain_text("OSError: attempt 2 failed on purpose")
    expect(page.locator(".moi-result-text")).to_have_text("3")
    assert handle.get(timeout=60) == 3
