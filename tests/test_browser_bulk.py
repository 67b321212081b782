"""The operations page's "every user's jobs" in headless Chromium against a real ``moi server``: a user column; a
search on the server that finds a user's job behind 1,200 newer ones; a bulk cancel that shows its count, and
that more than 1,000 match, before it runs, then acts on exactly those; a user's bulk delete on their own page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from moi.storage.redis_server import free_port
from tests.browser import Server, log_in, quiet, row
from tests.test_bulk_search import MANY, held_jobs


@pytest.fixture(scope="module")
def ops_server(redis_url: str) -> Iterator[Server]:
    server = Server(free_port(), env={**os.environ, "MOI_ADMINS": "ops"})
    server.start()
    yield server
    server.stop()


def test_an_admin_finds_a_users_old_job_and_bulk_cancels_what_the_preview_counted(
    r: Any, store: Any, browser: Any, ops_server: Server
) -> None:
    from playwright.sync_api import expect

    needle, hay = held_jobs()
    page = browser.new_context().new_page()
    with quiet(page):
        log_in(page, ops_server, "ops", "/ops")
        expect(page.locator("#moi-ops")).to_have_attribute("data-loaded", "true")
        expect(page.locator("#moi-all .moi-thead")).to_contain_text("User")
        expect(row(page, hay[-1]).locator(".moi-user")).to_have_text("dave")
        expect(page.locator("#moi-all .moi-count")).to_have_text("200 jobs loaded; older ones may match")
        expect(page.locator("#moi-all .moi-more")).to_be_visible()

        page.fill("#moi-all input[name=q]", "needle")  # past the 1,200 newer jobs: found on the server
        expect(row(page, needle).locator(".moi-user")).to_have_text("carol")
        expect(page.locator("#moi-all .moi-count")).to_have_text("1 job")
        page.fill("#moi-all input[name=q]", "")
        page.fill("#moi-all input[name=user]", "carol")
        expect(page.locator("#moi-all .moi-count")).to_have_text("1 job")
        expect(row(page, needle)).to_have_count(1)

        page.fill("#moi-all input[name=user]", "dave")
        page.select_option("#moi-all select[name=status]", "Paused")
        expect(row(page, needle)).to_have_count(0)  # the table shows what the server found
        expect(row(page, hay[-1])).to_have_count(1)
        page.click(".moi-bulk-preview")
        note = page.locator(".moi-bulk-note")
        expect(note).to_contain_text("Cancel 1000 jobs? More than 1000 jobs match: this acts on these 1000 only")
        expect(page.locator(".moi-bulk-next")).to_be_visible()
        assert all(info["status"] == "Paused" for info in store.get_many(hay))  # nothing done before the confirm
        page.click(".moi-bulk-confirm")
        expect(note).to_have_text("Cancel: 1000 done, 0 skipped.")
        statuses = [info["status"] for info in store.get_many(hay)]
        assert statuses == ["Paused"] * (MANY - 1000) + ["Cancelled"] * 1000  # exactly the newest 1,000

        page.click(".moi-bulk-preview")
        expect(note).to_have_text(f"Cancel {MANY - 1000} jobs?")  # the rest: no more match
        page.select_option("#moi-all select[name=status]", "")
        expect(note).to_have_text("The filters changed: preview again.")
        expect(page.locator(".moi-bulk-confirm")).to_be_hidden()
        page.click(".moi-bulk-preview")  # the newest 1,000 of dave's are cancelled already: skipped, and said so
        expect(note).to_contain_text(
            "Cancel 1000 jobs? 0 of them can be cancelled now; the other 1000 will be skipped."
        )
    page.context.close()

    mine = browser.new_context().new_page()  # carol, on her own page: her jobs only
    with quiet(mine):
        log_in(mine, ops_server, "carol", "/")
        expect(row(mine, needle)).to_have_count(1)
        mine.select_option("select[name=bulk]", "delete")
        mine.click(".moi-bulk-preview")
        expect(mine.locator(".moi-bulk-note")).to_have_text("Delete 1 job?")
        mine.click(".moi-bulk-confirm")
        expect(mine.locator(".moi-bulk-note")).to_have_text("Delete: 1 done, 0 skipped.")
        expect(row(mine, needle)).to_have_count(0)
    assert store.find(needle) is None and len(store.get_many(hay)) == MANY
    mine.context.close()
