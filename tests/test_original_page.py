"""An original-style page (moi.init, moi.add_callback, moi_list.init) in headless Chromium.

The application is tests/original_app.py, written as the original moi's users wrote
theirs: the unchanged MOIMessageHandler, the user in a ``json_encode``d cookie. Real
Redis, real cluster, real Tornado server, real browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import moi
from moi.group import create_info, get_id_from_user
from moi.job import submit
from moi.storage.redis_server import free_port
from tests import jobs, original_jobs
from tests.browser import Server

WAIT = 60  # seconds: a bound on a hang, never an assertion on time


@pytest.fixture
def app(r: Any) -> Iterator[Server]:
    server = Server(free_port(), command=("-m", "tests.original_app"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any, app: Server) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(WAIT * 1000)
    yield context.new_page()
    context.close()


def open_as(page: Any, app: Server, user: str, path: str) -> None:
    page.goto(f"{app.url}/login?user={user}&next={path}")


def qiita_group(user: str) -> dict[str, Any]:
    """What Qiita does before submitting an analysis."""
    moi_user_id = get_id_from_user(user)
    return create_info("analysis 1", "group", url="/analysis/", parent=moi_user_id, store=True)


def p_of(page: Any, node_id: str) -> Any:
    return page.locator(f'#moi-list > p[id="{node_id}"]')


def status_of(page: Any, node_id: str) -> Any:
    return page.locator(f'span[id="{node_id}:status"]')


def seen(action: str, node_id: str, status: str | None = None) -> str:
    """A page condition: the raw page's callbacks got ``action`` for that node (with that status)."""
    extra = f" && info.status === '{status}'" if status else ""
    return f"window.seen.some(([a, info]) => a === '{action}' && info.id === '{node_id}'{extra})"


def gone_from_redis(r: Any, node_id: str) -> bool:
    deadline = time.monotonic() + WAIT
    while r.exists(node_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not r.exists(node_id)


def test_the_list_follows_a_create_info_group_live(page: Any, app: Server, r: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    group = qiita_group("qiita@example.org")
    open_as(page, app, "qiita@example.org", f"/analysis/{group['id']}")
    expect(page.locator("#jobs > #moi-list")).to_have_count(1)
    page.evaluate(
        """() => {
        window.seen = [];
        new MutationObserver(() => document.querySelectorAll('#moi-list span').forEach(s => {
            if (window.seen[window.seen.length - 1] !== s.textContent) window.seen.push(s.textContent);
        })).observe(document.getElementById('moi-list'), {subtree: true, childList: true, characterData: true});
    }"""
    )
    release = tmp_path / "release"
    job_id, _, _ = submit(
        moi.ctx_default,
        group["id"],
        "Creating analysis",
        "/analysis/results/1",
        original_jobs.run_analysis,
        1,
        {"release": str(release)},
        depth=3,
    )

    expect(status_of(page, job_id)).to_have_text("Running analysis 1 at depth 3")
    release.touch()
    expect(status_of(page, job_id)).to_have_text("Success")
    row = p_of(page, job_id)
    expect(row).to_have_text("Delete Creating analysis: Success")
    expect(row.locator("button")).to_have_text("Delete")
    expect(status_of(page, job_id).locator("a")).to_have_attribute("href", f"/analysis/results/1/{job_id}")
    seen = page.evaluate("window.seen")
    order = {"Queued": 0, "Running": 1, "Running analysis 1 at depth 3": 2, "Success": 3}
    assert seen[-1] == "Success" and "Running analysis 1 at depth 3" in seen, seen
    assert [order[s] for s in seen] == sorted(order[s] for s in seen), seen

    failing, _, _ = submit(
        "default", group["id"], "Broken analysis", "/analysis/results/2", original_jobs.run_analysis, 2, "fail"
    )
    expect(status_of(page, failing).locator("a")).to_have_text("Failed")
    elsewhere, _, _ = submit("default", "qiita@example.org", "not in this group", None, jobs.add, 1, 2)
    assert moi.job.get_info(elsewhere)["parent"] != group["id"]

    p_of(page, failing).locator("button").click()
    expect(p_of(page, failing).locator("button")).to_have_text("Delete? (click again to confirm)")
    p_of(page, failing).locator("button").click()
    expect(p_of(page, failing)).to_have_count(0)
    assert gone_from_redis(r, failing)
    expect(page.locator("#moi-list > p")).to_have_count(1)  # only this group's jobs, never the other one


def test_a_job_named_as_html_is_shown_as_text(page: Any, app: Server) -> None:
    from playwright.sync_api import expect

    group = qiita_group("mallory")
    open_as(page, app, "mallory", f"/analysis/{group['id']}")
    name = "<img src=x onerror=\"document.title='owned'\">"
    job_id, _, _ = submit("default", group["id"], name, None, jobs.add, 1, 2)

    expect(status_of(page, job_id)).to_have_text("Success")
    expect(p_of(page, job_id)).to_have_text(f"Delete {name}: Success")
    assert page.locator("#moi-list img").count() == 0
    assert page.title() != "owned"


def test_the_users_own_list_shows_groups_with_details_links_and_removes_them(page: Any, app: Server, r: Any) -> None:
    from playwright.sync_api import expect

    group = qiita_group("carol")
    inside, _, _ = submit("default", group["id"], "inside", None, jobs.add, 1, 2)
    open_as(page, app, "carol", "/")

    details = status_of(page, group["id"]).locator("a")
    expect(details).to_have_text("Group details")
    expect(details).to_have_attribute("href", f"/analysis/{group['id']}")
    expect(p_of(page, inside)).to_have_count(0)  # a grandchild: not a row of the user's own list

    p_of(page, group["id"]).locator("button").click()
    p_of(page, group["id"]).locator("button").click()  # Delete, then its confirmation
    expect(p_of(page, group["id"])).to_have_count(0)
    assert gone_from_redis(r, group["id"]) and gone_from_redis(r, inside)


def test_the_original_page_api_and_its_reconnect(page: Any, app: Server) -> None:
    user_group = get_id_from_user("dave")
    open_as(page, app, "dave", "/raw")
    assert page.evaluate("moi.VERSION") == moi.__version__
    page.wait_for_function(seen("get", user_group))

    first, _, _ = submit("default", "dave", "first", None, jobs.add, 1, 2)
    page.wait_for_function(seen("add", first))
    # Success comes as an update, or already in the add when the job was that quick.
    page.wait_for_function(f"{seen('update', first, 'Success')} || {seen('add', first, 'Success')}")

    app.stop()
    app.start()
    page.wait_for_function("window.opened === 2")  # reconnected by itself
    second, _, _ = submit("default", "dave", "second", None, jobs.add, 3, 4)
    # An "add" if the new socket was subscribed when it was stored, else in the answer to the page's "get".
    page.wait_for_function(f"{seen('add', second)} || {seen('get', second)}")


def test_the_list_resyncs_after_a_restart_without_duplicates(page: Any, app: Server, r: Any) -> None:
    from playwright.sync_api import expect

    group = qiita_group("erin")
    kept, _, _ = submit("default", group["id"], "kept", None, jobs.add, 1, 2)
    dropped, _, _ = submit("default", group["id"], "dropped", None, jobs.add, 3, 4)
    open_as(page, app, "erin", f"/analysis/{group['id']}")
    expect(status_of(page, kept)).to_have_text("Success")
    expect(status_of(page, dropped)).to_have_text("Success")

    app.stop()
    r.delete(dropped)  # removed while the page was offline
    r.srem(f"{group['id']}:jobs", dropped)
    while_down, _, _ = submit("default", group["id"], "while down", None, jobs.add, 5, 6)
    app.start()

    expect(status_of(page, while_down)).to_have_text("Success")
    expect(p_of(page, dropped)).to_have_count(0)
    expect(p_of(page, kept)).to_have_count(1)
    expect(page.locator("#moi-list > p")).to_have_count(2)
