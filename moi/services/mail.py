"""Mail of service jobs: to the submitter when a job ends, to the admin with a failure's traceback.

The write that finishes a job queues its mails in Redis (``moi:mail``, see
``moi.storage.retention``), so a job never waits on a mail server. A sender thread in
the runtime, ``moi server`` and ``moi watchdog`` sends them with the ``[mail]``
settings, retrying with backoff; a mail still refused after ``ATTEMPTS`` tries
is logged and counted in ``moi:mail:failed``, which ``moi status`` shows.
Each queued mail is taken by one sender (LPOP): it is sent at most once.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from typing import Any

from moi.core.config import Settings
from moi.core.errors import MoiError, RedisUnavailable, UnknownId
from moi.core.info import Info, Status
from moi.core.redact import masked_url, printable
from moi.jobs import connections
from moi.storage import loops
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.services.mail")

ATTEMPTS = 5
BACKOFF = 2.0  # seconds before the first retry; doubled each time
SMTP_TIMEOUT = 10.0
_sender: threading.Thread | None = None
_sender_lock = threading.Lock()


def compose(info: Info, to: str, settings: Settings, link: str = "") -> EmailMessage | None:
    """The mail ``to`` ("user" or "admin") is owed for a finished job, or ("link") an anonymous job's
    results ``link`` as it is submitted; None when there is nobody to send it to."""
    address = settings.admin_email if to == "admin" else info.get("email")
    if not address:
        return None
    message = EmailMessage()
    message["From"] = settings.mail_from or f"moi@{settings.smtp_host}"
    message["To"] = address
    name, status, service = (_one_line(info.get(field)) for field in ("name", "status", "service"))
    if to == "link":
        return _link_mail(message, service, link)
    link = info.get("url") or (f"{settings.site_url.rstrip('/')}/?job={info['id']}" if settings.site_url else "")
    if info.get("anonymous"):  # no account to see it with: its link is the one mailed when it was submitted
        link = "the link you were sent when you submitted it"
    if to == "user":
        message["Subject"] = f"Your {service} job {name} ended: {status}"
        lines = [f"Your job {name} (service {service}, id {info['id']}) ended: {status}."]
        if link:
            lines.append(f"See it at {link}")
    else:
        message["Subject"] = f"[moi] {service} job {info['id']} failed"
        lines = [f"Service job {info['id']} ({service}, name {name}) failed on {info.get('engine')}:", ""]
        lines.append(str(info.get("result")))
    message.set_content("\n".join(lines) + "\n")
    return message


def _link_mail(message: EmailMessage, service: str, link: str) -> EmailMessage:
    # Only the service's name (the operator's) and the link: the job's name is anyone's text, and would
    # make moi mail a stranger what an anonymous submitter wrote.
    message["Subject"] = f"Your {service} job was submitted"
    lines = [
        f"Your {service} job was submitted.",
        f"Its page, files and log are at {link}",
        "Anyone with this link can see the job: keep it to yourself. It works until the job expires.",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def _one_line(value: Any) -> str:
    """A job's field as header text: a CR or LF there would end the header (and a lone surrogate cannot be
    sent), so every control or unprintable character is a space. moi.core.values refuses them at submit; this is
    for what was stored before."""
    return "".join(char if char.isprintable() else " " for char in str(value))[:200]


def send(message: EmailMessage, settings: Settings) -> None:
    """One mail through the configured SMTP server; OSError or smtplib.SMTPException when it is refused."""
    port = settings.smtp_port or (465 if settings.smtp_tls == "ssl" else 25)
    server: smtplib.SMTP
    if settings.smtp_tls == "ssl":
        server = smtplib.SMTP_SSL(settings.smtp_host, port, timeout=SMTP_TIMEOUT, context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(settings.smtp_host, port, timeout=SMTP_TIMEOUT)
    with server:
        if settings.smtp_tls == "starttls":
            server.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            server.login(settings.smtp_user, settings.smtp_password)
        server.send_message(message)


def send_pending(store: Store, settings: Settings, wait: float = 0.0) -> int:
    """Send the mails queued now (waiting up to ``wait`` seconds for one); how many were sent."""
    sent = 0
    while True:
        with reaching(store.url):
            popped = store.redis.blpop([store.keys.mail], timeout=wait) if wait and not sent else None
            raw = popped[1] if popped else store.redis.lpop(store.keys.mail)
        if raw is None:
            return sent
        sent += _deliver(store, settings, raw)


def _deliver(store: Store, settings: Settings, raw: str) -> int:
    try:
        owed: dict[str, Any] = json.loads(raw)
        info = store.get(str(owed["job"]))
    except UnknownId:  # the job was removed meanwhile: nobody is owed its mail any more
        return 0
    except (ValueError, KeyError, TypeError, MoiError) as error:  # a bad entry, or a job moi cannot read
        return _given_up(store, f"a queued mail cannot be built: {printable(str(error))}")
    to = str(owed.get("to"))
    if to != "link" and info.get("status") not in (Status.SUCCESS, Status.FAILED, Status.CANCELLED):
        return 0  # resubmitted meanwhile: its next end sends its own
    try:
        message = compose(info, to, settings, str(owed.get("link", "")))
    except (ValueError, TypeError, LookupError) as error:  # a header or body the email package refuses
        return _given_up(store, f"mail about job {printable(info['id'])} cannot be built: {printable(str(error))}")
    if message is None:
        return 0
    for attempt in range(ATTEMPTS):
        try:
            send(message, settings)
            log.info("mailed %s about job %s", printable(message["To"]), info["id"])
            return 1
        except (OSError, smtplib.SMTPException) as error:
            last = error
            time.sleep(BACKOFF * 2**attempt if attempt < ATTEMPTS - 1 else 0)
        except (ValueError, TypeError, LookupError) as error:  # it cannot be written out: trying again won't help
            return _given_up(store, f"mail about job {printable(info['id'])} cannot be sent: {printable(str(error))}")
    where = masked_url(f"smtp://{settings.smtp_host}:{settings.smtp_port}")
    to = printable(message["To"])
    return _given_up(store, f"mail to {to} about job {info['id']} not sent after {ATTEMPTS} tries ({where}): {last}")


def _given_up(store: Store, reason: str) -> int:
    """A mail that will not go: one line in the log, and one more in ``moi:mail:failed`` (/metrics, ``moi status``)."""
    log.warning("%s", reason)
    with reaching(store.url):
        store.redis.incr(store.keys.mail_failed)
    return 0


def start_sender(store: Store) -> None:
    """The process's sender thread, started once, while mail is configured."""
    global _sender
    settings = connections.settings()
    if not settings.smtp_host:
        return
    with _sender_lock:
        if _sender is not None and _sender.is_alive():
            return
        if _sender is not None:  # it catches every failure: only something like SystemExit ends it
            loops.restarted(store, "mail", "the mail sender thread had died", log)
        _sender = threading.Thread(target=_send_forever, args=(store, settings), name="moi-mail", daemon=True)
        _sender.start()


def _send_forever(store: Store, settings: Settings) -> None:
    while True:
        try:
            send_pending(store, settings, wait=5.0)
        except RedisUnavailable as error:  # Redis away: the mails wait there
            log.warning("mail sender: %s", error)
            time.sleep(5.0)
        except Exception as error:  # the mail it was on is lost (and counted); the others still go
            loops.failed(store, "mail", "sending a queued mail", error, log)
            time.sleep(1.0)
