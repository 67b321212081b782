"""Values that Redis's Lua and JSON cannot hold: refused at every entry, and a stored one fails its job alone.

Every attack is made for real: raw JSON text over HTTP to a real server, frames on a real websocket, the
library's own calls, bad documents written straight into the session's Redis ahead of a real queue drained
by the real cluster, and mails through a real SMTP server.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
from typing import Any

import pytest

from moi import job as jobs
from moi import services
from moi.compute import worker
from moi.core.info import Status, dumps, new_id, new_info
from moi.errors import InputRefused, InvalidValue, ValidationFailed
from moi.jobs import connections
from moi.services import mail
from tests import jobs as job_functions
from tests import service_defs
from tests.conftest import finished
from tests.test_api import call, multipart, payload, token_for
from tests.test_relay_security import connect, server
from tests.test_service_retention import Inbox, smtp  # noqa: F401 (a fixture)

JOBS = "/api/v1/jobs"
# Numbers JSON text can carry and Redis's Lua cannot hold: written raw, as json.dumps refuses some of them.
NUMBERS = [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", str(10**309).encode(), str(2**63).encode()]
# One line each: names, URLs and addresses hold no control character, CR/LF above all.
NOT_ONE_LINE = ["a\u0001b", "a\nb", "x\r\nBcc: evil@example.org", "a\u2028b", "a\x7fb"]


@pytest.fixture(autouse=True)
def recording() -> Any:
    services.register(service_defs.Recording)  # reruns: int, pause: float, fail_in: str
    yield
    services.unregister("recording")


def others_job_runs() -> None:
    """Another user's plain job, from the library, still reaches Success."""
    job_id, _, _ = jobs.submit("default", "bob", "answer", None, job_functions.add, 40, 2)
    info = finished(job_id)
    assert (info["status"], info["result"]) == (Status.SUCCESS, 42), info


def refused(answer: Any, status: int = 422) -> str:
    """The one line of a refusal with ``status``."""
    assert answer.code == status, answer.body
    text = payload(answer)["error"]
    assert "\n" not in text and "Traceback" not in text, text
    return str(text)


async def numbers_refused(port: int, token: str) -> None:
    for number in NUMBERS:
        for param in (b"reruns", b"pause"):  # an int and a float parameter
            body = b'{"service":"recording","params":{"' + param + b'":' + number + b"}}"
            refused(await call(port, "POST", JOBS, token, body))
        form, headers = multipart({"service": "recording", "params": '{"pause": ' + number.decode() + "}"}, {})
        refused(await call(port, "POST", JOBS, token, form, headers=headers))


async def texts_refused(port: int, token: str) -> None:
    for text in (b'"\\ud800"', b'"a\\udc00b"', b'"a\\u0000b"', b'"a\\u001bb"'):  # a lone surrogate, controls
        for field in (b"name", b"url", b"email"):
            body = b'{"service":"recording","' + field + b'":' + text + b"}"
            refused(await call(port, "POST", JOBS, token, body))
        body = b'{"service":"recording","params":{"fail_in":' + text + b"}}"
        assert "fail_in" in refused(await call(port, "POST", JOBS, token, body))
    for line in NOT_ONE_LINE:
        for key in ("name", "url"):
            given = {"service": "recording", key: line, "email": "alice@example.org"}
            refused(await call(port, "POST", JOBS, token, given))
        given = {"service": "recording", "email": f"a@example.org{line}"}
        refused(await call(port, "POST", JOBS, token, given))
    refused(await call(port, "POST", JOBS, token, {"service": "recording", "email": "a@example.org\n"}))
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    assert "nested" in refused(await call(port, "POST", JOBS, token, {"service": "recording", "name": deep}))


async def form_and_socket_refused(port: int, token: str) -> None:
    # Each field of a form is held to the JSON body's limit (1 MiB); files alone may be larger.
    form, headers = multipart({"service": "recording", "name": "n" * (8 << 20)}, {})
    assert "name" in refused(await call(port, "POST", JOBS, token, form, headers=headers), 413)
    # A websocket frame is checked as a body is.
    ws = await connect(port, "alice")
    for frame in ('{"get": ["\\ud800"]}', '{"get": NaN}', '{"get": [1e999]}', '{"get": ["a\\u0000"]}'):
        ws.write_message(frame)
        raw = await asyncio.wait_for(ws.read_message(), 10)
        assert raw is not None, "the socket closed"
        answer = json.loads(raw)
        assert "error" in answer and "\n" not in answer["error"], answer
    ws.close()


def library_refuses(r: Any) -> None:
    """The library refuses as the API does, before anything is stored."""
    for name in ["\ud800", *NOT_ONE_LINE]:
        with pytest.raises(InvalidValue, match="name is refused"):
            jobs.submit("default", "carol", name, None, job_functions.add, 1, 2)
        with pytest.raises(InvalidValue):
            jobs.create_group(name, "carol")
    for name in ("a\nb", "a\udcffb"):  # a name listed in the job's info, as an input from a directory may bring
        with pytest.raises(InputRefused, match="its name is one line of text"):
            jobs.submit("default", "carol", "inputs", None, job_functions.add, 1, 2, files={name: b"x"})
    with pytest.raises(InvalidValue, match="url is refused"):
        jobs.submit_many("default", "carol", "sweep", "http://x/\r\nX: y", job_functions.add, [(1, 2)])
    for value in (float("nan"), float("inf"), 10**309, -(2**63), "nan", "1e999"):
        with pytest.raises(ValidationFailed, match="Parameter 'pause' is refused"):
            services.submit("recording", "carol", {"pause": value})
    with pytest.raises(ValidationFailed, match="Parameter 'reruns' is refused"):
        services.submit("recording", "carol", {"reruns": 2**63})
    with pytest.raises(ValidationFailed, match="Email address"):
        services.submit("recording", "carol", {}, email="c@example.org\r\nBcc: evil@example.org")
    assert not r.keys("*:call")  # no job of any was queued


def test_values_json_and_lua_cannot_hold_are_refused_at_every_entry(r: Any) -> None:
    alice = token_for("alice")

    async def scenario() -> None:
        async with server(moi_api_max_upload=32 << 20) as port:
            await numbers_refused(port, alice)
            await texts_refused(port, alice)
            await form_and_socket_refused(port, alice)
            assert payload(await call(port, "GET", JOBS, alice))["jobs"] == []  # nothing of any was stored

    asyncio.run(scenario())
    library_refuses(r)
    others_job_runs()


def stored_job(store: Any, owner: str, name: str = "bad", **fields: Any) -> tuple[str, dict[str, Any]]:
    """A queued job's info as moi writes it, under ``owner``'s group, not yet in Redis."""
    group_id = store.ensure_group(owner)
    job_id = new_id()
    info = new_info(job_id, name, "job", store.keys.channel(job_id), parent=group_id, context="default")
    info.update(owner=group_id, priority=0, **fields)
    return job_id, info


def test_a_stored_job_the_take_cannot_read_fails_alone_and_the_queue_goes_on(r: Any) -> None:
    store = connections.store()
    keys = store.keys
    texts = {}
    job_id, info = stored_job(store, "mallory", params={"n": 1})
    texts[job_id] = dumps(info).replace('"n":1', '"n":1e999')  # cjson reads it as inf, and cannot write it back
    job_id, info = stored_job(store, "mallory", params={"n": 1})
    texts[job_id] = dumps(info).replace('"n":1', '"n":-1e999')
    job_id, info = stored_job(store, "mallory", name="\ud800")  # as json.dumps writes it: "\ud800", cjson refuses
    texts[job_id] = dumps(info)
    job_id, info = stored_job(store, "mallory")
    texts[job_id] = dumps(info)[:-7]  # cut short: not JSON at all
    owner = info["owner"]
    for place, (job_id, text) in enumerate(texts.items()):
        r.set(keys.info(job_id), text)
        r.set(keys.call(job_id), "not a call")
        r.sadd(keys.active(owner), job_id)
        r.zadd(keys.queue("default"), {job_id: place})  # ahead of any job of priority 1000
    typed_wrong = new_id()  # a key of another type, where a queued job's document should be
    r.hset(keys.info(typed_wrong), "status", "Queued")
    r.zadd(keys.queue("default"), {typed_wrong: len(texts)})

    others_job_runs()

    assert r.zcard(keys.queue("default")) == 0
    for job_id in [*texts, typed_wrong]:
        info = store.get(job_id)
        assert info["status"] == Status.FAILED, info
        assert info["result"].startswith("stored job cannot be read: ") and "\n" not in info["result"], info
    assert not r.smembers(keys.active(owner))  # no longer counted against mallory's limits
    assert r.hget(keys.tally, "Failed|") == str(len(texts) + 1)


def test_a_relaunch_of_a_job_stored_with_a_lone_surrogate_name_is_refused(r: Any) -> None:
    store = connections.store()
    job_id, info = stored_job(store, "mallory", name="\ud800")
    info.update(status=Status.SUCCESS, result=1)
    r.set(store.keys.info(job_id), dumps(info))
    r.set(store.keys.call(job_id), "kept")
    with pytest.raises(InvalidValue, match="name is refused: it holds a lone surrogate"):
        jobs.relaunch(job_id)
    assert r.zcard(store.keys.queue("default")) == 0


def test_a_mail_that_cannot_be_built_is_counted_failed_and_the_next_is_sent(r: Any, smtp: Inbox) -> None:  # noqa: F811
    store, settings = connections.store(), connections.settings()
    keys = store.keys
    # Stored before names and addresses were checked (the entries refuse both now): written straight into Redis.
    crlf, info = stored_job(store, "mailer", name="x\r\nBcc: evil@example.org \ud800", service="recording")
    info.update(status=Status.SUCCESS, email="alice@example.org")
    r.set(keys.info(crlf), dumps(info))
    bad_address, info = stored_job(store, "mailer", service="recording")
    info.update(status=Status.FAILED, email="bob@example.org\r\nBcc: evil@example.org")
    r.set(keys.info(bad_address), dumps(info))
    unreadable = new_id()
    r.set(keys.info(unreadable), "{not JSON")
    owed = [{"job": job_id, "to": "user"} for job_id in (bad_address, unreadable, crlf)]
    r.rpush(keys.mail, "not JSON either", *(json.dumps(entry) for entry in owed))

    assert mail.send_pending(store, settings) == 1
    assert r.get(keys.mail_failed) == "3"  # the bad entry, the unreadable job's, the address's; the sender went on
    (sent,) = smtp.messages
    assert sent.rcpt_tos == ["alice@example.org"]
    message = email.message_from_bytes(sent.content, policy=email.policy.default)
    assert message["Bcc"] is None and "\n" not in message["Subject"]
    assert message["Subject"].startswith("Your recording job x  Bcc: evil@example.org")


def test_an_engine_whose_take_fails_says_so_once_and_backs_off(
    r: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A take Redis refuses for real (the retiring set is a string), in a key space of its own: engines of the
    # session, which share the default prefix, never see it.
    prefix = "values-test:"
    r.set(f"{prefix}moi:engines:retiring:default", "not a set")
    monkeypatch.setattr(worker, "TAKE_BACKOFF", 0.1)  # the pause, shortened; not what is checked
    spec = worker.WorkSpec("default", redis_url, prefix, 60, linger=0.1)
    with caplog.at_level(logging.WARNING, logger="moi.worker"):
        assert [worker.work(spec) for _ in range(3)] == [0, 0, 0]  # each returns, none raises
    (line,) = [record.getMessage() for record in caplog.records if "cannot take jobs" in record.getMessage()]
    assert "WRONGTYPE" in line and "\n" not in line
