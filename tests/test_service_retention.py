"""Retention and mail of service jobs: archived and expired in seconds, mails through a real SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from examples.hetatm_service import SAMPLE, Hetatm
from moi import files, services
from moi.core.info import Status
from moi.jobs import connections
from moi.services import mail, sweeper
from tests import service_defs
from tests.conftest import finished, run_moi
from tests.test_file_routes import fetch
from tests.test_relay_security import server
from tests.test_retention_hooks import hook_jobs

SERVICES = (Hetatm, service_defs.Recording, service_defs.Kept)


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    for cls in SERVICES:
        services.register(cls)
    yield
    for cls in SERVICES:
        services.unregister(cls.name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Inbox:
    """What a real SMTP server (aiosmtpd, on a free port of 127.0.0.1) received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    for name, value in {
        "MOI_SMTP_HOST": "127.0.0.1",
        "MOI_SMTP_PORT": str(port),
        "MOI_MAIL_FROM": "moi@example.org",
        "MOI_ADMIN_EMAIL": "admin@example.org",
        "MOI_SITE_URL": "https://jobs.example.org/",
    }.items():
        monkeypatch.setenv(name, value)
    connections.reset()
    yield inbox
    controller.stop()
    monkeypatch.undo()
    connections.reset()


def test_a_finished_job_is_archived_then_expired_in_seconds_with_its_hooks_called_once(r, tmp_path: Path) -> None:
    store = connections.store()
    ids = [services.submit("kept", "keeper", {"counts": str(tmp_path)})[0] for _ in range(12)]
    assert all(finished(job_id)["status"] == Status.SUCCESS for job_id in ids)
    assert r.zcard("moi:due:archive") == 12

    time.sleep(1.1)  # archive_after is 1s: let it pass, then four sweepers race for the same jobs
    racing = [threading.Thread(target=sweeper.sweep, args=(store,)) for _ in range(4)]
    for thread in racing:
        thread.start()
    for thread in racing:
        thread.join()
    assert {store.get(job_id)["status"] for job_id in ids} == {Status.ARCHIVED}
    # Only the sweeper whose move landed queued the hook: one hook job each, run on an engine.
    assert all(hook_jobs(job_id, 1)["archive"]["status"] == Status.SUCCESS for job_id in ids)
    archived = (tmp_path / "archive.log").read_text().splitlines()
    assert sorted(archived) == sorted(f"{job_id} True" for job_id in ids)  # once each, directory still there
    assert r.zcard("moi:due:archive") == 0 and r.zcard("moi:due:expire") == 12

    time.sleep(1.1)
    # The sweeper in `moi watchdog` (and the runtime's, and `moi server`'s): it needs no service to move them.
    done = run_moi("watchdog", "--once")
    assert done.returncode == 0, done.stderr
    for job_id in ids:
        assert hook_jobs(job_id, 2)["expire"]["status"] == Status.SUCCESS
        info = store.get(job_id)
        assert info["status"] == Status.EXPIRED
        assert info["service"] == "kept" and info["date_archived"] and info["date_expired"]  # metadata kept
        assert not Path(files.directory_of(job_id)).exists()  # removed by its hook job, after the hook
        assert 0 < r.ttl(job_id) <= connections.settings().keep_expired
    assert sorted((tmp_path / "expire.log").read_text().splitlines()) == sorted(f"{i} True" for i in ids)
    assert r.zcard("moi:due:expire") == 0
    assert sweeper.sweep(store) == []  # nothing due: nothing moves


def test_an_archived_jobs_files_are_no_longer_served_but_its_metadata_is(r, tmp_path: Path) -> None:
    store = connections.store()
    job_id = services.submit("hetatm", "keeper", {}, files={"a.pdb": SAMPLE.encode()})[0]
    assert finished(job_id)["status"] == Status.SUCCESS
    assert sweeper.sweep(store, moment=time.time() + 31 * 86400) == [job_id]  # 30 days on, as the sweeper sees it
    info = store.get(job_id)
    assert info["status"] == Status.ARCHIVED
    assert hook_jobs(job_id, 1)["archive"]["status"] == Status.SUCCESS  # archive() gzipped the structures
    assert [e.path for e in files.list(job_id, "output")] == ["output/hetatm.pdb.gz", "output/summary.json"]

    async def over_the_web() -> None:
        async with server() as port:
            answer = await fetch(port, f"/moi-files/{job_id}/output/summary.json", user="keeper")
            assert answer.code == 410
            assert json.loads(answer.body) == {
                "error": f"Job {job_id} is archived: its files are no longer served",
                "code": "gone",
            }
            assert (await fetch(port, f"/moi-files/{job_id}/", user="someone-else")).code == 404

    asyncio.run(over_the_web())


def test_mail_reaches_the_submitter_and_a_failure_the_admin_with_its_traceback(r, smtp: Inbox) -> None:
    store, settings = connections.store(), connections.settings()
    ok = services.submit("hetatm", "mailer", {}, files={"a.pdb": SAMPLE.encode()}, email="alice@example.org")[0]
    broken = services.submit("recording", "mailer", {"fail_in": "run"})[0]
    assert finished(ok)["status"] == Status.SUCCESS and finished(broken)["status"] == Status.FAILED

    assert mail.send_pending(store, settings) == 2
    by_recipient = {
        tuple(m.rcpt_tos): email.message_from_bytes(m.content, policy=email.policy.default) for m in smtp.messages
    }
    to_alice = by_recipient[("alice@example.org",)]
    assert to_alice["Subject"] == "Your hetatm job hetatm ended: Success"
    assert f"See it at https://jobs.example.org/?job={ok}" in to_alice.get_content()
    to_admin = by_recipient[("admin@example.org",)]
    assert to_admin["Subject"] == f"[moi] recording job {broken} failed"
    assert "RuntimeError: run broke on purpose" in to_admin.get_content()


def test_a_mail_server_that_is_down_fails_no_job_and_is_counted(r, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOI_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MOI_SMTP_PORT", "9")  # discard: nothing listens there
    monkeypatch.setattr(mail, "BACKOFF", 0.0)
    connections.reset()
    store = connections.store()
    job_id = services.submit("hetatm", "mailer", {}, files={"a.pdb": SAMPLE.encode()}, email="bob@example.org")[0]
    assert finished(job_id)["status"] == Status.SUCCESS  # the job never waits on the mail

    assert mail.send_pending(store, connections.settings()) == 0
    assert r.get("moi:mail:failed") == "1"
    status = run_moi("status")
    assert "mail: 0 waiting, 1 not sent (see the log)" in status.stdout
    monkeypatch.undo()
    connections.reset()


def test_mail_logs_in_with_the_configured_user_and_the_password_never_reaches_the_log(
    r, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=logins[-1:] == [(b"moi", b"S3cret-mail")])

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        config = tmp_path / "moi.ini"
        config.write_text(
            f"[mail]\nhost = 127.0.0.1\nport = {port}\nuser = moi\npassword = S3cret-mail\nfrom = jobs@example.org\n"
        )
        monkeypatch.setenv("MOI_CONFIG_FP", str(config))
        connections.reset()
        settings = connections.settings()
        assert "S3cret-mail" not in repr(settings)
        job_id = services.submit("hetatm", "mailer", {}, files={"a.pdb": SAMPLE.encode()}, email="c@example.org")[0]
        assert finished(job_id)["status"] == Status.SUCCESS
        with caplog.at_level("DEBUG"):
            assert mail.send_pending(connections.store(), settings) == 1
        assert logins == [(b"moi", b"S3cret-mail")]
        assert [m.rcpt_tos for m in inbox.messages] == [["c@example.org"]]
        assert "S3cret-mail" not in caplog.text
    finally:
        controller.stop()
        monkeypatch.undo()
        connections.reset()
