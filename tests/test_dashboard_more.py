"""More of the dashboard against Flower, in headless Chromium against a real ``moi server``: what a job ran
(shown as text, bounded, secrets redacted, in its page and the API), counts of what the table shows, result
links only to what the server serves, times with their zone (UTC on hover), the last hour's axes, the
table's header scrolling with its rows at 390 px, and one name for deleting, Delete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from moi import services
from moi.core.info import Status, new_id, new_info
from moi.jobs import ran
from moi.jobs.ran import FIELD_LIMIT
from moi.services import Parameter, Service
from moi.storage.redis_server import free_port
from moi.storage.store import Store
from tests import jobs
from tests.browser import Server, log_in, quiet, row
from tests.conftest import finished

SCRIPT = "<script>document.title='owned'</script>"
IMG = "<img src=x onerror=\"document.title='owned'\">"
CUT = f"… (cut: 5000 characters, the first {FIELD_LIMIT} shown)"


class Keyed(Service):
    """A service with a secret parameter, one named like a secret and a plain one."""

    name = "keyed"
    parameters = [Parameter("key", "str", secret=True), Parameter("api_token"), Parameter("plain")]

    def run(self) -> str:
        return "true"


@pytest.fixture
def server(r: Any) -> Iterator[Server]:
    server = Server(free_port(), env={**os.environ, "MOI_ADMINS": "ops", "MOI_CODE_USERS": "dora"})
    server.start()
    yield server
    server.stop()


def test_a_service_job_keeps_its_secrets_off_its_info(r: Any, store: Store) -> None:
    services.register(Keyed)
    try:
        job_id, _, _ = services.submit("keyed", "sam", {"key": "k1", "api_token": "t1", "plain": "x" * 5000})
    finally:
        services.unregister("keyed")
    info = store.get(job_id)
    assert info["params"] == {"key": "***", "api_token": "***", "plain": "x" * 5000}  # the call keeps the values
    assert info["ran"] == {"service": "keyed", "params": {"key": "***", "api_token": "***", "plain": "x" * 2048 + CUT}}
    assert "k1" not in str(info) and "t1" not in str(info)


def test_what_ran_masks_secrets_inside_its_texts() -> None:
    """URLs' passwords, NAME=value, Authorization headers and nested keys, beside names that only look alike."""

    def connect(*args: object, **kwargs: object) -> None: ...

    call = ran.function_call(
        connect,
        ["postgresql://bob:hunter1@db/x", {"config": {"password": "hunter2", "user": "u"}}, "x?pw=hunter3&y=1"],
        {"author": "Ann", "passphrase": "hunter4", "db_pw": "hunter5", "opts": {"Auth_Token": "hunter6"}},
    )
    shell = ran.command(
        "system", 'PGPASSWORD=hunter7 psql; curl -H "Authorization: Bearer hunter8" https://u:hunter9@h/'
    )
    service = ran.service_call("s", {"passphrase": "hunter10", "note": "pwd=hunter11 ok", "author": "ann"})
    assert "hunter" not in str([call, shell, service])
    assert call["args"][0] == "'postgresql://bob:***@db/x'" and call["kwargs"]["author"] == "'Ann'"
    assert shell["command"] == 'PGPASSWORD=*** psql; curl -H "Authorization: Bearer ***" https://u:***@h/'
    assert service["params"] == {"passphrase": "***", "note": "pwd=*** ok", "author": "ann"}
    assert not any(ran.is_secret(name) for name in ("author", "authority", "upwards", "pword"))


def steps_under(store: Store, user: str) -> str:
    """A finished service job with two steps, as a chain leaves it: the steps are jobs under the job."""
    group = store.ensure_group(user)
    parent = new_id()
    info = {**new_info(parent, "chained", "job", store.keys.channel(parent), parent=group), "steps": ["a", "b"]}
    store.add_nodes(group, [{**info, "status": Status.SUCCESS}])
    steps = [new_info(new_id(), name, "job", "", parent=parent) for name in ("a", "b")]
    store.add_nodes(parent, [{**step, "pubsub": store.keys.channel(step["id"]), "status": "Success"} for step in steps])
    return parent


def test_what_ran_times_counts_links_and_delete(browser: Any, server: Server, store: Store) -> None:
    from playwright.sync_api import expect

    hostile, _, _ = jobs_submit("/nowhere", SCRIPT, IMG, api_token="hush", note="x" * 5000)
    served, _, _ = jobs_submit("/jobs", 1, 2)  # url/ID is this job's own page: served
    steps_under(store, "dora")
    assert finished(hostile)["status"] == finished(served)["status"] == "Success"
    narrow = {"width": 390, "height": 800}
    context = browser.new_context(timezone_id="America/New_York", locale="en-US", viewport=narrow)
    page = context.new_page()
    with quiet(page):
        log_in(page, server, "dora", "/")
        long_code = page.evaluate("moiDashboard.api('POST', '/jobs', {cmd: 'return 1  # ' + 'y'.repeat(5000)})")
        expect(page.locator(".moi-count")).to_have_text("4 of 4 jobs")  # the two steps are not rows: not counted
        expect(row(page, served).locator("a.moi-result")).to_have_attribute("href", f"/jobs/{served}")
    expect(row(page, hostile).locator("a.moi-result")).to_have_count(0)  # /nowhere/ID would be a 404
    expect(page.get_by_role("button", name="Remove")).to_have_count(0)
    expect(row(page, hostile).locator("button.moi-delete")).to_have_text("Delete")

    created = row(page, hostile).locator(".moi-created")  # local time with its zone, UTC on hover
    expect(created).to_contain_text("EST")
    utc = datetime.fromisoformat(store.get(hostile)["date_created"]).astimezone(UTC)
    expect(created).to_have_attribute("title", utc.strftime("%Y-%m-%d %H:%M:%S UTC"))

    # At 390 px the table scrolls sideways as one: its header stays above its rows.
    table = page.locator("#moi-dashboard .moi-table")
    table.evaluate("node => { node.scrollLeft = 300; }")
    assert table.evaluate("node => node.scrollLeft") > 0
    header_left = page.locator(".moi-thead .moi-th").nth(2).evaluate("node => node.getBoundingClientRect().left")
    cell_left = row(page, hostile).locator(".moi-status-cell").evaluate("node => node.getBoundingClientRect().left")
    assert header_left == cell_left
    viewport = page.locator("#moi-jobs")
    assert viewport.evaluate("node => node.scrollWidth <= node.clientWidth")  # the rows never scroll on their own

    with quiet(page):  # what ran: as text, never as HTML; long values cut with a note; a secret's name redacted
        page.goto(f"{server.url}/jobs/{hostile}")
        expect(page.locator(".moi-ran-function")).to_have_text("tests.jobs.add")
        expect(page.locator(".moi-ran-args li")).to_have_text([repr(SCRIPT), repr(IMG)])
        expect(page.locator(".moi-ran-kwargs tr")).to_have_text(["api_token***", f"note'{'x' * 2047}{CUT}"])
        expect(page.locator("td", has_text="EST").first).to_be_visible()  # the fields' times too
        expect(page.locator(".moi-actions a.moi-result")).to_have_count(0)
    assert page.locator(".moi-ran img, .moi-ran script").count() == 0 and page.title() != "owned"
    expect(page.get_by_role("button", name="Remove")).to_have_count(0)

    answer = page.evaluate(f"moiDashboard.api('GET', '/jobs/{hostile}')")  # the API says the same
    assert answer["ran"]["args"] == [repr(SCRIPT), repr(IMG)]
    assert answer["ran"]["kwargs"] == {"api_token": "***", "note": repr("x" * 5000)[:FIELD_LIMIT] + CUT}
    for path, expected in ((f"/jobs/{hostile}", True), ("/nowhere/x", False)):
        assert page.request.get(f"{server.url}/api/v1/served?path={path}").json() == {"path": path, "served": expected}
    for bad in ("//evil.example/x", "x", "/" + "a" * 3000):  # not a path on this server, or too long: 400
        refused = page.request.get(f"{server.url}/api/v1/served?path={bad}")
        assert refused.status == 400 and "path is a path on this server" in refused.json()["error"]
    many_fields = page.request.get(f"{server.url}/api/v1/served?path=/%3F" + "%26" * 1100)  # its query is no route's
    assert many_fields.status == 200 and many_fields.json()["served"] is True
    code = page.evaluate(f"moiDashboard.api('GET', '/jobs/{long_code['id']}')")["ran"]
    text = "return 1  # " + "y" * 5000
    assert code == {"cmd_type": "python", "command": text[:FIELD_LIMIT] + CUT.replace("5000", str(len(text)))}
    with quiet(page):
        page.goto(f"{server.url}/jobs/{served}")
        expect(page.locator(".moi-actions a.moi-result")).to_have_attribute("href", f"/jobs/{served}")
        page.goto(f"{server.url}/list")  # moi.js's list: a result link only where served; Delete too, asking first
        expect(row(page, served).locator("a.moi-result")).to_have_attribute("href", f"/jobs/{served}")
        expect(row(page, hostile).locator("a.moi-result")).to_have_count(0)
        delete = row(page, hostile).locator("button.moi-delete")
        expect(delete).to_have_text("Delete")
        delete.click()
        expect(delete).to_have_text("Delete? (click again to confirm)")
    expect(page.get_by_role("button", name="Remove")).to_have_count(0)

    admin = browser.new_context().new_page()
    with quiet(admin):  # the last hour's chart has labelled axes
        log_in(admin, server, "ops", "/ops")
        expect(admin.locator("#moi-ops")).to_have_attribute("data-loaded", "true")
        expect(admin.locator(".moi-chart .moi-axis-title")).to_have_text(["time (minutes ago)", "jobs per minute"])
        expect(admin.locator(".moi-chart .moi-axis-label").last).to_have_text("now")
        assert admin.locator(".moi-chart .moi-axis").count() == 2
    admin.context.close()
    context.close()


def jobs_submit(url: str, *args: Any, **kwargs: Any) -> Any:
    from moi.job import submit

    return submit("default", "dora", "what ran", url, jobs.add, *args, **kwargs)
