"""Anonymous jobs with a secret results link, against a real ``moi server``, Redis, cluster, SMTP server and Chromium.

The link shows its one job, live, with its files and log, and nothing else: no other job, list, page or socket.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.websocket import websocket_connect

from moi import job as jobs
from moi import services
from moi.core.config import build_settings
from moi.core.errors import ConfigError, InputRefused, InvalidValue, QuotaExceeded, ServiceDefinitionError
from moi.core.info import Status
from moi.core.keys import ANONYMOUS_OWNER
from moi.jobs import connections
from moi.relay.hub import Hub
from moi.relay.websocket import MAX_SOCKETS
from moi.services import anonymous, documents, sweeper
from moi.services.anonymous import address_scope
from moi.storage import retention
from moi.web import anonymous as anonymous_web
from moi.web import anonymous_limits
from moi.web.anonymous import client_address
from tests.browser import Server, quiet
from tests.browser import browser as browser  # the module's Chromium
from tests.service_defs import Greeter
from tests.test_logins import run_async
from tests.test_service_retention import Inbox, free_port

ROOT = Path(__file__).parent  # an input root of this module's server (a member may name a path in it)
MAX_UPLOAD = 64 << 10  # bytes of an anonymous multipart body, in this module's server
PER_HOUR = 10  # anonymous submissions one address may make in an hour, in this module's server
YAML = """
services:
  - name: anon_echo
    anonymous: true
    parameters:
      - {name: word, type: str, default: hello}
    archive_after: 30d
    expire_after: 60d
    steps:
      - {name: say, run: "echo {word} > $OUTPUT/said.txt && echo said {word}"}
  - name: members_only
    steps:
      - {name: say, run: echo hi}
"""


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    received = Inbox()
    received.port = free_port()  # type: ignore[attr-defined]
    controller = Controller(received, hostname="127.0.0.1", port=received.port)  # type: ignore[attr-defined]
    controller.start()
    yield received
    controller.stop()


@pytest.fixture(scope="module")
def anon_server(redis_url: str, inbox: Inbox) -> Iterator[Server]:
    """``moi server`` with mail and a small hourly count; its Redis emptied and the services loaded once."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    client.close()
    connections.reset()
    services.load_into(connections.store(), YAML, "test_anonymous")
    env = {
        **os.environ,
        "MOI_SMTP_HOST": "127.0.0.1",
        "MOI_SMTP_PORT": str(inbox.port),  # type: ignore[attr-defined]
        "MOI_MAIL_FROM": "moi@example.org",
        "MOI_ANONYMOUS_PER_HOUR": str(PER_HOUR),
        "MOI_INPUT_ROOTS": str(ROOT),  # a member may name a path in it, and 127.0.0.1 may be fetched: not anonymously
        "MOI_FETCH_ALLOW": "127.0.0.1",
        "MOI_ANONYMOUS_MAX_UPLOAD": str(MAX_UPLOAD),
        "MOI_SERVICES": "tests.service_defs:Greeter",  # a Python service open to all, beside the YAML ones
    }
    port = free_port()
    env["MOI_SITE_URL"] = f"http://127.0.0.1:{port}/"  # the link mailed starts with it, never with a Host sent
    server = Server(port, env=env)
    server.start()
    yield server
    proc = server.proc
    server.stop()
    log = proc.stderr.read() if proc is not None and proc.stderr is not None else ""
    assert "/r/" in log or not ASKED_WRONG  # the 404s of the wrong links were logged (when some were asked) ...
    assert not [secret for secret in SEEN if secret in log]  # ... and no secret with them


SEEN: list[str] = []  # every secret this module was given: none may reach the server's log
ASKED_WRONG: list[bool] = []  # whether a link that leads nowhere was asked (a 404, logged)


def submit(server: Server, body: dict[str, Any]) -> httpx.Response:
    answer = httpx.post(server.url + "/api/v1/anonymous/jobs", json=body, timeout=60)
    if answer.status_code == 201:
        SEEN.append(answer.json()["link"].rsplit("/", 1)[1])
    return answer


def api_of(link: str) -> str:
    """The API's path of a link's job: /r/ID/SECRET -> /api/v1/anonymous/jobs/ID/SECRET."""
    return "/api/v1/anonymous/jobs/" + link.removeprefix("/r/")


def finished(server: Server, link: str) -> dict[str, Any]:
    """The link's job once it has ended, read through the link itself."""
    api = server.url + api_of(link)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info: dict[str, Any] = httpx.get(api, timeout=30).json()
        if info.get("status") in (Status.SUCCESS, Status.FAILED):
            return info
        time.sleep(0.2)
    raise AssertionError(f"{link} did not finish")


def socket_answer(server: Server, path: str, frames: list[dict[str, Any]]) -> Any:
    """The status of a websocket upgrade refused, or the frames answering ``frames`` (each sent after the last
    answer), on a socket opened with no cookie at all."""

    async def talk() -> Any:
        try:
            socket = await websocket_connect(HTTPRequest(server.url.replace("http", "ws") + path))
        except HTTPClientError as error:
            return error.code
        answers = []
        for frame in frames:
            socket.write_message(json.dumps(frame))
            answers.append(json.loads(str(await socket.read_message())))
        socket.close()
        return answers

    return run_async(talk())


def mailed_link(inbox: Inbox, job_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for envelope in inbox.messages:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            if job_id in message.get_content() and "was submitted" in str(message["Subject"]):
                return str(message.get_content())
        time.sleep(0.2)
    raise AssertionError(f"no mail with the link of {job_id}")


def test_a_link_shows_its_one_job_live_with_its_files_and_log_and_nothing_else(
    browser: Any, anon_server: Server, inbox: Inbox
) -> None:
    from playwright.sync_api import expect

    spam = "Cheap pills at evil.example"
    body = {"service": "greeter", "params": {"word": "bonjour"}, "email": "me@example.org", "name": spam}
    answer = submit(anon_server, body)
    assert answer.status_code == 201, answer.text
    job_id, link = answer.json()["id"], answer.json()["link"]
    assert link.startswith(f"/r/{job_id}/") and len(link.rsplit("/", 1)[1]) >= 43
    mailed = mailed_link(inbox, job_id)
    assert f"{anon_server.url}{link}" in mailed and "greeter" in mailed  # the service and the link, whole ...
    assert spam not in mailed and not [m for m in inbox.messages if b"Cheap pills" in m.content]  # ... no one's text
    stored = connections.store().redis.get(connections.store().keys.anonymous_link(job_id))
    assert stored and link.rsplit("/", 1)[1] not in stored  # only its hash is kept
    context = browser.new_context()
    try:
        page = context.new_page()
        with quiet(page):
            page.goto(anon_server.url + link)
            root = page.locator("#moi-job")
            expect(root).to_have_attribute("data-status", "Success")
            expect(root).to_have_attribute("data-connected", "true")
            expect(page.locator(".moi-file-view", has_text="output/said.txt")).to_be_visible()
            expect(page.locator(".moi-log")).to_contain_text("greeting bonjour")
        hrefs = page.eval_on_selector_all("a[href]", "nodes => nodes.map(node => node.getAttribute('href'))")
        assert hrefs and all(href.startswith(api_of(link) + "/files/") for href in hrefs)
        assert not page.locator(".moi-actions button, .moi-bar nav, .moi-logout").count()
        page.click(".moi-file-view >> text=output/said.txt")
        assert "bonjour" in page.content()
        cookies = {cookie["name"]: cookie["value"] for cookie in context.cookies()}
    finally:
        context.close()
    assert not {name for name in cookies if name != "_xsrf"}  # the link gives no login of any kind
    from_the_form(browser, anon_server)
    missing = httpx.get(anon_server.url + api_of(link) + "/files/output/none.txt", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"] == anonymous_web.NO_FILE  # no CLI, no path
    log = httpx.get(anon_server.url + api_of(link) + "/log", timeout=30)
    assert log.status_code == 200 and log.text
    info = finished(anon_server, link)
    assert info["id"] == job_id and info["status"] == Status.SUCCESS


def test_a_link_reaches_no_other_job_and_a_wrong_secret_is_an_unknown_job(anon_server: Server) -> None:
    links = [submit(anon_server, {"service": "anon_echo"}).json()["link"] for _ in range(2)]
    mine, other = (link.removeprefix("/r/").split("/") for link in links)
    finished(anon_server, links[0])
    alices = services.submit("members_only", "alice", {})[0]
    base = anon_server.url
    # A wrong secret, an unknown job, another job with my secret: one and the same 404, as page and as API.
    for path in ("/r/{}/{}", "/api/v1/anonymous/jobs/{}/{}", "/api/v1/anonymous/jobs/{}/{}/files/"):
        answers = [
            httpx.get(base + path.format(job, secret), timeout=30)
            for job, secret in ((mine[0], "x" * 43), (other[0], mine[1]), (alices, mine[1]), ("nope", mine[1]))
        ]
        ASKED_WRONG.append(True)
        assert {answer.status_code for answer in answers} == {404}
        assert len({answer.text for answer in answers}) == 1, path
    # Nothing of a login: the list, another job's page and the user socket are refused as to anyone.
    assert httpx.get(base + "/api/v1/jobs", timeout=30).status_code == 401
    assert httpx.get(base + f"/jobs/{alices}", timeout=30).status_code == 302
    # Its socket: its job, and no other, not even the other link's.
    assert socket_answer(anon_server, f"/r/{other[0]}/{mine[1]}/ws", []) == 404
    asked = [{"get": [alices]}, {"log": other[0]}, {"cancel": [mine[0]]}, {"get": []}]  # the last: the job first
    frames = socket_answer(anon_server, f"/r/{mine[0]}/{mine[1]}/ws", asked)
    assert all("error" in frame for frame in frames[:3]), frames
    assert "unknown verb" in frames[2]["error"]
    assert frames[3]["get"]["id"] == mine[0]
    hidden = {"engine", "owner", "parent", "pubsub", "ttl", "context", "archive_after", "expire_after", "email"}
    assert not hidden & set(frames[3]["get"]) and not hidden & set(finished(anon_server, links[0]))
    services.register(Greeter)  # here too, to submit it from this process (the server runs it)
    try:
        failing = anonymous.submit("greeter", {"word": "fail"})
    finally:
        services.unregister("greeter")
    SEEN.append(failing.secret)
    failed = finished(anon_server, failing.path)
    assert failed["status"] == Status.FAILED and not hidden & set(failed)
    assert failed["result"].endswith("no greeting for fail") and "Traceback" not in failed["result"]
    assert "/" not in failed["result"] and "\n" not in failed["result"]  # its last line: no server path
    # A service not marked anonymous, and code: refused with one line; a bad address is refused too.
    refused, unknown = (submit(anon_server, {"service": name}) for name in ("members_only", "members_onlx"))
    assert refused.status_code == unknown.status_code == 422  # a members' service is told as none: not probeable
    assert refused.json()["error"].replace("members_only", "X") == unknown.json()["error"].replace("members_onlx", "X")
    code = submit(anon_server, {"cmd": "print(1)", "cmd_type": "python"})
    assert code.status_code == 403 and "account" in code.json()["error"]
    bad = submit(anon_server, {"service": "anon_echo", "email": "a@b.org\r\nBcc: c@d.org"})
    assert bad.status_code == 422 and "Email address" in bad.json()["error"]
    extra = submit(anon_server, {"service": "anon_echo", "priority": 9})
    assert extra.status_code == 422 and "'priority'" in extra.json()["error"]


def test_anonymous_inputs_are_uploads_never_a_path_or_uri(anon_server: Server) -> None:
    store = connections.store()
    links_before = set(store.redis.scan_iter(store.keys.anonymous_link("*")))  # every anonymous job has one
    inside = str(ROOT / "service_defs.py")
    for files in ([inside], [f"file://{inside}"], [anon_server.url + "/static/moi.js"], "x", [5]):
        refused = httpx.post(anon_server.url + "/api/v1/anonymous/jobs", json={"service": "anon_echo", "files": files})
        assert refused.status_code == 422 and "uploaded" in refused.json()["error"], refused.text
    url = anon_server.url + "/api/v1/anonymous/jobs"
    uploaded = httpx.post(url, data={"service": "anon_echo"}, files={"input": ("in.txt", b"hi")}, timeout=60)
    assert uploaded.status_code == 201, uploaded.text  # an upload is what an anonymous job takes
    SEEN.append(uploaded.json()["link"].rsplit("/", 1)[1])
    links_before.add(store.keys.anonymous_link(uploaded.json()["id"]))
    big = httpx.post(url, data={"service": "anon_echo"}, files={"input": ("in.txt", b"x" * MAX_UPLOAD)}, timeout=60)
    assert big.status_code == 413 and "over" in big.json()["error"]  # [anonymous] max_upload
    with pytest.raises(InputRefused, match="uploaded files only"):
        anonymous.submit("anon_echo", files=[inside])
    assert set(store.redis.scan_iter(store.keys.anonymous_link("*"))) == links_before  # no job was made


def test_a_path_near_a_link_is_a_404_that_logs_no_secret(anon_server: Server) -> None:
    answer = submit(anon_server, {"service": "anon_echo"})  # its secret is in SEEN: the server's log must not hold it
    link = answer.json()["link"]
    near = [link + "/", link + "/x", link + "/ws/", api_of(link) + "/", api_of(link) + "/logs", "/r/" + link[3:] + "//"]
    for path in near:
        assert httpx.get(anon_server.url + path, timeout=30).status_code == 404, path
    ASKED_WRONG.append(True)
    assert anonymous_web.redacted("/r/1/" + link.rsplit("/", 1)[1] + "/x") == "/r/1/…/x"
    assert anonymous_web.redacted("/r//secret") == "/r//…"


def test_link_sockets_are_counted_by_address_not_by_link(anon_server: Server) -> None:
    links = [anonymous.submit("anon_echo").path for _ in range(2)]  # made here: the hour's count is spent
    SEEN.extend(link.rsplit("/", 1)[1] for link in links)

    async def open_until_refused() -> tuple[int, Any]:
        opened: list[Any] = []
        try:
            for attempt in range(MAX_SOCKETS + 1):  # alternating links: 20 a link would let all of these open
                url = anon_server.url.replace("http", "ws") + links[attempt % 2] + "/ws"
                try:
                    opened.append(await websocket_connect(HTTPRequest(url)))
                except HTTPClientError as error:
                    return len(opened), error.code
            return len(opened), None
        finally:
            for socket in opened:
                socket.close()

    count, refusal = run_async(open_until_refused())
    assert refusal == 429 and count <= MAX_SOCKETS


def test_an_address_is_limited_per_hour_and_an_expired_job_has_no_link(anon_server: Server) -> None:
    statuses = [submit(anon_server, {"service": "anon_echo"}) for _ in range(PER_HOUR)]
    limited = [answer for answer in statuses if answer.status_code == 429]
    assert limited and "anonymous jobs an hour from one address" in limited[0].json()["error"]
    assert 0 < int(limited[0].headers["Retry-After"]) <= 3600  # until the next hour's count
    link = next(answer.json()["link"] for answer in statuses if answer.status_code == 201)
    finished(anon_server, link)
    store = connections.store()
    job_id = link.split("/")[2]
    deadline = time.monotonic() + 60
    while store.get(job_id)["status"] != Status.EXPIRED and time.monotonic() < deadline:
        sweeper.sweep(store, moment=time.time() + 100 * 86400)  # archived, then expired, as the days pass
        time.sleep(0.2)
    assert store.get(job_id)["status"] == Status.EXPIRED
    assert httpx.get(anon_server.url + link, timeout=30).status_code == 404
    assert socket_answer(anon_server, link + "/ws", []) == 404
    assert httpx.get(anon_server.url + api_of(link), timeout=30).status_code == 404


def from_the_form(browser: Any, server: Server) -> None:
    """The form of the services open to all, with no login: it lists only those, and leads to the new job's link."""
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        page = context.new_page()
        with quiet(page):
            page.goto(server.url + "/anonymous")
            expect(page.locator("select[name=service] option")).to_have_count(2)  # greeter, anon_echo
            assert "members_only" not in page.content()
            page.select_option("select[name=service]", "greeter")
            page.fill("input[name='param:word']", "salut")
            page.fill("input[name=email]", "form@example.org")
            page.click("button[type=submit]")
            page.wait_for_url("**/r/**")
            expect(page.locator("#moi-job")).to_have_attribute("data-status", "Success")
            expect(page.locator(".moi-log")).to_contain_text("greeting salut")
    finally:
        context.close()


def test_an_address_is_counted_by_its_host_and_the_settings_and_yaml_say_who_may_submit(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert address_scope("2001:db8:1:2::1") == address_scope("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_scope("2001:db8:1:3::1") != address_scope("2001:db8:1:2::1")
    assert address_scope("::ffff:192.0.2.7") == address_scope("192.0.2.7") == "192.0.2.7"
    # Behind a proxy of [server] trusted_proxies, the address it saw; anyone else's X-Forwarded-For is ignored.
    monkeypatch.setenv("MOI_TRUSTED_PROXIES", "10.0.0.0/8")
    connections.reset()
    for peer, expected in (("10.1.2.3", "2001:db8::7"), ("192.0.2.9", "192.0.2.9")):
        request = HTTPServerRequest("POST", "/api/v1/anonymous/jobs", headers=HTTPHeaders())
        request.remote_ip, request.headers["X-Forwarded-For"] = peer, "198.51.100.1, 2001:db8::7"
        assert client_address(request) == expected
    monkeypatch.delenv("MOI_TRUSTED_PROXIES")
    ini = tmp_path / "moi.ini"
    ini.write_text("[anonymous]\nmax_per_hour_per_address = 3\nmax_queued = 9\n")
    monkeypatch.setenv("MOI_CONFIG_FP", str(ini))
    settings = build_settings()
    anonymous_settings = (settings.anonymous_per_hour, settings.anonymous_max_queued, settings.anonymous_max_upload)
    assert anonymous_settings == (3, 9, 8 << 20)
    ini.write_text("[anonymous]\nmax_per_hour = 3\n")
    with pytest.raises(ConfigError, match=r"\[anonymous\] has no option 'max_per_hour'"):
        build_settings()
    (open_to_all,) = documents.load(YAML.replace("members_only", "x").split("  - name: x")[0])
    assert open_to_all.anonymous and open_to_all.definition["anonymous"] is True
    forever = YAML.replace("    expire_after: 60d\n", "")
    with pytest.raises(ServiceDefinitionError, match="is anonymous: it needs archive_after and expire_after"):
        documents.load(forever)
    with pytest.raises(ServiceDefinitionError, match="is anonymous: it needs archive_after and expire_after"):
        services.register(type("Forever", (Greeter,), {"name": "forever", "expire_after": "never"}))
    with pytest.raises(ServiceDefinitionError, match="anonymous is true or false"):
        documents.load(YAML.replace("anonymous: true", "anonymous: 'yes'"))
    connections.reset()  # nothing of this test's settings stays for the next


def test_anonymous_jobs_have_a_quota_of_their_own(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOI_ANONYMOUS_MAX_QUEUED", "1")
    connections.reset()
    services.register(Greeter)
    store = connections.store()
    store.ensure_group(ANONYMOUS_OWNER)
    try:
        jobs.pause(user=ANONYMOUS_OWNER)  # held, so it stays unfinished
        first = anonymous.submit("greeter", {"word": "one"})
        with pytest.raises(QuotaExceeded):
            anonymous.submit("greeter", {"word": "two"})
        store.ensure_group("alice")
        jobs.pause(user="alice")
        services.submit("greeter", "alice", {})  # a member's job is not held back by the anonymous quota
        with pytest.raises(InvalidValue, match="this server sends no mail"):  # no [mail]: the link would wait forever
            anonymous.submit("greeter", {"word": "two"}, email="me@example.org")
        held = anonymous.job_of_link(store, first.job_id, first.secret)
        assert held is not None and held["owner"] == store.group_of_user(ANONYMOUS_OWNER)
        assert anonymous.job_of_link(store, first.job_id, "x" * 43) is None
    finally:
        services.unregister("greeter")
        monkeypatch.undo()
        connections.reset()


def test_an_anonymous_job_mails_no_end_and_an_address_gets_few_links_a_day(r: Any) -> None:
    store = connections.store()
    done = {"anonymous": True, "email": "me@example.org", "status": Status.FAILED}
    assert retention.mail_commands(store.keys, "job", done) == []  # neither its submitter's nor the admin's
    assert retention.mail_commands(store.keys, "job", {**done, "anonymous": False})  # a member's job has both

    async def count(times: int) -> int:
        hub = Hub(store.url, store.keys, store.ttl)
        try:
            for sent in range(times):
                try:
                    await anonymous_limits.count_mail(hub, "Me@example.org" if sent % 2 else "me@example.org ")
                except anonymous_limits.RateLimited as error:
                    assert error.status_code == 429 and 0 < error.retry_after <= 86400
                    return sent
            return times
        finally:
            await hub.close()

    assert run_async(count(anonymous_limits.MAILS_PER_DAY + 3)) == anonymous_limits.MAILS_PER_DAY

    async def after_a_burst_last_hour() -> int:  # the last clock hour still counts, for its part within the hour
        hub = Hub(store.url, store.keys, store.ttl)
        try:
            try:
                await anonymous_limits.count_address(hub, "192.0.2.50", 1)
            except anonymous_limits.RateLimited as error:
                return int(error.status_code)
            return 201
        finally:
            await hub.close()

    store.redis.set(anonymous.rate_key(store.keys, "192.0.2.50", time.time() - 3600), 10**6)
    assert run_async(after_a_burst_last_hour()) == 429
    assert not [key for key in store.redis.scan_iter("*mailed*") if "me@" in key]  # kept by its hash only
