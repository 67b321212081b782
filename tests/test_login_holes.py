"""The logins' review holes, each against a real in-process ``moi server`` application and real Redis:
a flood of logins bounded and reserved in the throttle, the client behind a proxy, the proxy header's
rules, sessions capped per user and a socket closed at its session's expiry, the development login
beside a real one (and Secure cookies), argon2 parameters renewed, and login log lines rate-limited."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

import moi.jobs.connections
from moi.core.config import build_settings
from moi.core.errors import ConfigError
from moi.core.keys import Keys
from moi.core.log_limit import LimitedLog
from moi.storage import accounts, sessions
from moi.web.login import SECURE_SETTING
from moi.web.login_checks import ADDRESS_BUSY, BUSY, CHECKS, PER_ADDRESS, address_place
from moi.web.proxy import proxy_warnings
from moi.web.server import PAM_LOGIN_WARNING, login_settings, start_warnings
from tests.test_logins import PASSWORD, WRONG_PASSWORD, error_line, run_async

XSRF = "2|00000000|" + "a" * 32 + "|0"  # any well-formed token, the same in the cookie and the form

Body = Callable[[httpx.AsyncClient], Awaitable[Any]]


def in_process(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], body: Body, **app: Any) -> Any:
    """``body(client)`` against ``make_app`` served in-process with ``env`` as moi's settings."""
    from moi.server import make_app
    from tests.web import serving

    async def run() -> Any:
        async with serving(make_app(cookie_secret="holes-tests", moi_sessions=True, **app)) as port:  # noqa: SIM117
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                client.cookies.set("_xsrf", XSRF)
                return await body(client)

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    moi.jobs.connections.reset()
    try:
        return run_async(run())
    finally:
        for name in env:
            monkeypatch.delenv(name)
        moi.jobs.connections.reset()


async def post(client: httpx.AsyncClient, user: str, password: str, client_ip: str = "") -> httpx.Response:
    headers = {"X-Forwarded-For": f"203.0.113.9, {client_ip}"} if client_ip else {}  # a forged first hop
    form = {"user": user, "password": password, "_xsrf": XSRF}
    return await client.post("/login", data=form, headers=headers)


def test_a_login_flood_is_bounded_reserved_and_throttled_per_address(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    accounts.add(moi.jobs.connections.store(), "ivan", PASSWORD)
    r.hset("moi:accounts", "judy", json.dumps({"argon2": PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)}))

    async def body(client: httpx.AsyncClient) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        flood = [post(client, "ivan", WRONG_PASSWORD, "10.0.0.1") for _ in range(8)]
        seen["flood"] = sorted(answer.status_code for answer in await asyncio.gather(*flood))
        seen["elsewhere"] = (await post(client, "ivan", PASSWORD, "10.0.0.2")).status_code
        await post(client, "ivan", WRONG_PASSWORD, "2001:db8::1")
        await post(client, "ivan", WRONG_PASSWORD, "2001:db8::ffff")
        with contextlib.ExitStack() as stack:  # every place of the checks' pool taken: refused at once
            assert all(stack.enter_context(CHECKS.place()) for _ in range(CHECKS.workers + CHECKS.waiting))
            seen["busy"] = await post(client, "ivan", PASSWORD, "10.0.0.3")
        with contextlib.ExitStack() as stack:  # one address's checks in flight taken: it waits, not the others
            assert all(stack.enter_context(address_place("10.0.0.5")) for _ in range(PER_ADDRESS))
            seen["mine_busy"] = await post(client, "ivan", PASSWORD, "10.0.0.5")
            seen["others"] = (await post(client, "ivan", PASSWORD, "10.0.0.6")).status_code
        seen["rehashed"] = (await post(client, "judy", PASSWORD, "10.0.0.4")).status_code
        return seen

    seen = in_process(monkeypatch, {"MOI_LOGINS": "password", "MOI_TRUSTED_PROXIES": "127.0.0.1"}, body)
    # Reserved before the check (no race past the count), at most PER_ADDRESS of them in flight at once.
    checked = seen["flood"].count(401)
    assert 1 <= checked <= 3 and seen["flood"] == [401] * checked + [429] * (8 - checked)
    # The pair waits (counted, and its wait set at its third attempt), not the account: another address logs in.
    assert r.get("moi:login:failed:pair:10.0.0.1|ivan") == str(checked) and seen["elsewhere"] == 302
    assert r.get("moi:login:failed:pair:10.0.0.2|ivan") is None  # its success cleared it
    assert r.get("moi:login:failed:pair:2001:db8::/64|ivan") == "2"  # IPv6 counted by /64
    assert r.get("moi:login:failed:net:2001:db8::/56") == "2"  # and its /56 too
    assert r.get("moi:login:failed:pair:203.0.113.9|ivan") is None  # the forged first hop is not the client
    assert seen["busy"].status_code == 503 and error_line(seen["busy"]) == BUSY
    assert seen["rehashed"] == 302 and "m=65536" in json.loads(r.hget("moi:accounts", "judy"))["argon2"]
    assert r.get("moi:login:failed:addr:10.0.0.3") is None  # a busy answer counts no attempt
    assert seen["mine_busy"].status_code == 429 and error_line(seen["mine_busy"]) == ADDRESS_BUSY
    assert seen["others"] == 302 and r.get("moi:login:failed:addr:10.0.0.5") is None


def test_the_dev_login_beside_a_real_one_never_takes_an_admin_name(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts.add(moi.jobs.connections.store(), "kate", PASSWORD)

    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await post(client, name, "") for name in ("boss", "kate", "newcomer")]

    env = {"MOI_LOGINS": "dev, password", "MOI_ADMINS": "boss"}
    boss, kate, newcomer = in_process(monkeypatch, env, body, moi_secure_cookies=True)
    assert boss.status_code == kate.status_code == 401 and newcomer.status_code == 302
    assert all("Secure" in line for line in newcomer.headers.get_list("set-cookie"))  # HTTPS only


def test_the_proxy_header_once_with_its_secret_and_one_session(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(client: httpx.AsyncClient) -> dict[str, Any]:
        twice = await client.get("/login", headers=[("X-Remote-User", "hana"), ("X-Remote-User", "boss")])
        no_secret = await client.get("/login", headers={"X-Remote-User": "hana"})
        proxied = {"X-Remote-User": "hana", "X-Moi-Proxy-Secret": "s3cret-of-the-proxy"}
        first = await client.get("/login", headers=proxied)
        again = await client.get("/login", headers=proxied)
        kept = (await client.get("/api/v1/jobs", headers=proxied)).status_code
        # The proxy now names another user: hana's session ends on that request, and /login logs the other in.
        switched = await client.get("/api/v1/jobs", headers={**proxied, "X-Remote-User": "hugo"})
        relogged = await client.get("/login", headers={**proxied, "X-Remote-User": "hugo"})
        return {
            "twice": twice,
            "no_secret": no_secret,
            "first": first,
            "again": again,
            "kept": kept,
            "switched": switched.status_code,
            "relogged": relogged,
        }

    env = {
        "MOI_LOGINS": "header",
        "MOI_TRUSTED_PROXIES": "10.9.9.9, 127.0.0.1",
        "MOI_PROXY_SECRET": "s3cret-of-the-proxy",
    }
    seen = in_process(monkeypatch, env, body)
    assert seen["twice"].status_code == 400 and "more than once" in error_line(seen["twice"])
    assert seen["no_secret"].status_code == 401 and "moi_session" not in seen["no_secret"].cookies
    assert seen["first"].status_code == 302
    assert seen["again"].status_code == 302 and seen["kept"] == 200  # the live session kept ...
    assert seen["switched"] == 401 and r.zcard("moi:sessions:hana") == 0  # ... until the proxy names another
    assert seen["relogged"].status_code == 302 and r.zcard("moi:sessions:hugo") == 1
    with pytest.raises(ConfigError, match=r"^\[server\] trusted_proxies must list the proxies"):
        build_settings({"logins": "header", "trusted_proxies": "10.0.0.1, ::/0"})
    with pytest.raises(ConfigError, match="trusted_proxies"):
        build_settings({"logins": "password", "trusted_proxies": "0.0.0.0/0"})
    monkeypatch.setenv("MOI_LOGINS", "header")
    monkeypatch.setenv("MOI_TRUSTED_PROXIES", "10.0.0.0/8, ::1")
    moi.jobs.connections.reset()
    try:
        warned = proxy_warnings("10.1.2.3")
        assert len(warned) == 2 and "holds 10.1.2.3" in warned[0] and "holds ::1" in warned[1]
    finally:
        monkeypatch.delenv("MOI_LOGINS")
        monkeypatch.delenv("MOI_TRUSTED_PROXIES")
        moi.jobs.connections.reset()


def test_with_a_proxy_secret_a_forwarded_address_counts_only_beside_it(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local process reaching moi's port directly cannot name a fresh address per guess (the same-host setup)."""
    accounts.add(moi.jobs.connections.store(), "lena", PASSWORD)
    secret = {"X-Moi-Proxy-Secret": "s3cret-of-the-proxy"}

    async def body(client: httpx.AsyncClient) -> list[int]:
        forged = [await post(client, "lena", WRONG_PASSWORD, f"10.7.0.{n}") for n in range(4)]
        for hop in ("10.0.0.7:5678", "[2001:db8::5]:80"):
            form = {"user": "lena", "password": WRONG_PASSWORD, "_xsrf": XSRF}
            await client.post("/login", data=form, headers={"X-Forwarded-For": hop, **secret})
        return [answer.status_code for answer in forged]

    env = {
        "MOI_LOGINS": "password",
        "MOI_TRUSTED_PROXIES": "127.0.0.1",
        "MOI_PROXY_SECRET": secret["X-Moi-Proxy-Secret"],
    }
    assert in_process(monkeypatch, env, body) == [401, 401, 401, 429]  # all the socket's: one bucket
    assert r.get("moi:login:failed:pair:127.0.0.1|lena") == "3" and not r.keys("moi:login:failed:pair:10.7.*")
    assert r.get("moi:login:failed:pair:10.0.0.7|lena") == "1"  # with the secret, the hop, its port dropped
    assert r.get("moi:login:failed:pair:2001:db8::/64|lena") == "1"
    monkeypatch.setenv("MOI_LOGINS", "password")
    monkeypatch.setenv("MOI_TRUSTED_PROXIES", "127.0.0.1")
    moi.jobs.connections.reset()
    try:  # no secret, loopback trusted: warned with any login method
        assert ["throttle" in line for line in proxy_warnings("127.0.0.1")] == [True]
        monkeypatch.setenv("MOI_LOGINS", "pam")
        moi.jobs.connections.reset()
        assert PAM_LOGIN_WARNING in start_warnings("127.0.0.1")  # pam_service = login: faillock may lock
    finally:
        monkeypatch.delenv("MOI_LOGINS")
        monkeypatch.delenv("MOI_TRUSTED_PROXIES")
        moi.jobs.connections.reset()


def test_auto_secure_cookies_on_loopback_behind_a_tls_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """On loopback, auto means Secure once an https site_url or trusted_proxies says a TLS proxy is in front."""
    for env, secure in (
        ({}, False),
        ({"MOI_SITE_URL": "https://jobs.example.org/"}, True),
        ({"MOI_SITE_URL": "http://127.0.0.1:8080/"}, False),
        ({"MOI_TRUSTED_PROXIES": "127.0.0.1"}, True),
        ({"MOI_TRUSTED_PROXIES": "127.0.0.1", "MOI_SECURE_COOKIES": "off"}, False),
    ):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        moi.jobs.connections.reset()
        try:
            assert login_settings("127.0.0.1")[SECURE_SETTING] is secure, env
        finally:
            for name in env:
                monkeypatch.delenv(name)
            moi.jobs.connections.reset()


def test_sessions_are_capped_per_user_with_an_expiry_that_only_grows(r: Any, redis_url: str) -> None:
    async def start_many() -> list[str]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            made = [await sessions.start(client, Keys(""), redis_url, "kim", False, 1000) for _ in range(52)]
            await sessions.start(client, Keys(""), redis_url, "kim", False, 10)
            return made
        finally:
            await client.aclose()

    made = run_async(start_many())
    assert r.zcard("moi:sessions:kim") == sessions.MAX_PER_USER
    assert not r.exists(f"moi:session:{sessions.digest_of(made[0])}")  # the oldest ended
    assert r.exists(f"moi:session:{sessions.digest_of(made[-1])}")
    assert r.ttl("moi:sessions:kim") > 500  # the short session did not shorten the set's life


def test_a_socket_closes_when_its_session_expires(r: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(client: httpx.AsyncClient) -> list[str]:
        assert (await client.get("/login", headers={"X-Remote-User": "lena"})).status_code == 302
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in client.cookies.jar)
        url = str(client.base_url).replace("http", "ws") + "/moi-ws/"
        socket = await websocket_connect(HTTPRequest(url, headers={"Cookie": cookies}))
        frames = []
        while (frame := await socket.read_message()) is not None:  # closed by the server, not the test
            frames.append(str(frame))
        return frames

    env = {"MOI_LOGINS": "header", "MOI_TRUSTED_PROXIES": "127.0.0.1", "MOI_SESSION_HOURS": "0.0006"}  # 2 s
    frames = in_process(monkeypatch, env, body)
    assert any("your login has ended" in frame for frame in frames)


def test_login_log_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    limited = LimitedLog(logging.getLogger("moi.test-limit"), per_minute=3)
    with caplog.at_level(logging.INFO, logger="moi.test-limit"):
        for number in range(50):
            limited.info("failed login %d", number)
    assert len(caplog.records) <= 3 + 3 + 1  # this minute's, and at most the next minute's had it just turned
