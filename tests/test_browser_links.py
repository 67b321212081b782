"""Result links built by moi.js stay on the page's own site, in real headless Chromium.

A job's ``url`` is whatever its submitter gave: a browser drops tabs and
newlines and reads a backslash as a slash, so several spellings of another
site must all give no link at all.
"""

from __future__ import annotations

from typing import Any

from moi.core.info import new_id, new_info
from moi.storage.store import Store
from tests.browser import Server, log_in, row

OFF_SITE = [
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "https://evil.example/results",
    "http://evil.example",
    "javascript:alert(1)//",
    "data:text/html,hi",
    "/\x00/evil.example",
    "/\u00a0/evil.example",
    "/\u2028/evil.example",
]


def test_job_links_never_leave_the_site(page: Any, server: Server, store: Store) -> None:
    from playwright.sync_api import expect

    log_in(page, server, "linda")

    def link(url: Any) -> Any:
        info = {"id": "a-job-id", "status": "Success", "url": url}
        return page.evaluate("(info) => moi.jobLink(info)", info)

    for url in OFF_SITE:
        assert link(url) is None, repr(url)
    assert link("/result") == "/result/a-job-id"
    assert link("/result/") == "/result/a-job-id"
    assert link(server.url + "/result") == server.url + "/result/a-job-id"  # absolute, but this site
    assert link(None) is None

    # And as a row on the page: an off-site url shows no link, an on-site one does.
    group = store.ensure_group("linda")
    evil, good = new_id(), new_id()
    infos = [
        {
            **new_info(evil, "evil", "job", store.keys.channel(evil), parent=group, url="/\t/evil.example"),
            "status": "Success",
        },
        {**new_info(good, "good", "job", store.keys.channel(good), parent=group, url="/jobs"), "status": "Success"},
    ]
    store.add_nodes(group, infos)
    expect(row(page, good).locator("a.moi-result")).to_have_attribute("href", f"/jobs/{good}")  # served here
    expect(row(page, evil).locator(".moi-status")).to_have_text("Success")
    expect(row(page, evil).locator("a.moi-result")).to_have_count(0)


def test_a_finished_job_with_files_links_to_its_listing(page: Any, server: Server, store: Store) -> None:
    from playwright.sync_api import expect

    from moi.job import submit
    from tests import files_jobs

    log_in(page, server, "fiona")
    job_id, _, handle = submit("default", "fiona", "with files", None, files_jobs.use_files, files={"a.txt": b"abc"})
    handle.get(timeout=120)
    plain, _, done = submit("default", "fiona", "without", None, files_jobs.where)
    done.get(timeout=120)

    link = row(page, job_id).locator("a.moi-files")
    expect(link).to_have_text("files (3)")  # the input and the two outputs
    expect(link).to_have_attribute("href", f"/moi-files/{job_id}/")
    expect(row(page, plain).locator(".moi-status")).to_have_text("Success")
    expect(row(page, plain).locator("a.moi-files")).to_have_count(0)
    link.click()
    expect(page.locator("body")).to_contain_text('"input/a.txt"')
