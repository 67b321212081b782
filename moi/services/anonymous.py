"""Anonymous jobs with a secret results link (saliweb's model).

A service marked ``anonymous`` (``anonymous: true`` in YAML, ``anonymous = True`` in Python) takes jobs
from anyone, without an account. Such a job:

- belongs to the reserved owner ``moi:anonymous`` (``moi.core.keys.ANONYMOUS_OWNER``: no login can have
  that name), and counts against ``[anonymous] max_queued``, the unfinished anonymous jobs of everyone
  together (the per-user hard limit, with that owner);
- gets only what the service declares: its parameters (type-checked), uploaded inputs (its validators;
  never a path or URI, which would read the server's files or reach its network), a name and an email
  address. No priority, time limit, retries, URL, group or code;
- answers with a link, ``/r/<job id>/<secret>``: 32 random bytes of which only the SHA-256 is kept
  (``moi:anonymous:link:<id>``), compared in constant time. The link reaches that one job and nothing
  else (see ``moi.web.anonymous``); once the job has expired (retention) or is removed, the link gets
  the same 404 as a wrong secret.

The link is mailed to the address given, if any (refused when ``[mail]`` has no smtp_host): the mail
waits in ``moi:mail`` with the link, the one place the secret is written, until the sender takes it
(``moi.services.mail``). It says the service's name and the link, no text of the submitter's (no spam
rides on it), and it is the only mail an anonymous job sends: none when it ends. Submissions from one
client address (an IPv6 one by its /64) are counted per hour, under ``rate_key``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moi.core.errors import BadDocument, InputRefused, InvalidValue, UnknownService
from moi.core.info import Info, Status, is_uuid, parse
from moi.core.keys import ANONYMOUS_OWNER, Keys
from moi.core.redact import printable
from moi.jobfiles.input_policy import WEB
from moi.jobs import connections
from moi.queue.jobqueue import Limits
from moi.services import registry, submission
from moi.services.definition import Service
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

SECRET_BYTES = 32
MAX_SECRET = 100  # characters of a secret worth hashing: a real one has 43
LINK_MAIL = "link"  # the "to" of the mail that carries a link (moi.services.mail)
_NO_ID = "00000000-0000-0000-0000-000000000000"  # read in place of an id that is not one (uuid4 never makes it)
_NO_LINK = "0" * 64  # compared against when there is no link, so either way costs the same
_HOUR = 3600


@dataclass(frozen=True)
class Link:
    """An anonymous job's results link: its id and its secret (known only to whoever was given it)."""

    job_id: str
    secret: str

    @property
    def path(self) -> str:
        return f"/r/{self.job_id}/{self.secret}"


def anonymous_service(name: Any, store: Store | None = None) -> type[Service]:
    """The service ``name`` when it takes anonymous jobs; else UnknownService naming only the anonymous ones,
    the same for a members' service as for none at all: no other service's name is told, nor can be probed."""
    known = registry.known(store)
    open_to_all = sorted(service for service, cls in known.items() if cls.anonymous)
    if not isinstance(name, str) or name not in open_to_all:
        raise UnknownService(printable(str(name), 80), open_to_all)
    return known[name]


def submit(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    files: Any = None,
    email: str | None = None,
    job_name: str | None = None,
    site: str = "",
) -> Link:
    """Queue an anonymous job of service ``name``; its link (mailed to ``email``, if given, after ``site``,
    ``[moi] site_url``). UnknownService for a service that takes none; the quota's QuotaExceeded (429)."""
    anonymous_service(name)
    settings = connections.settings()
    if email and not settings.smtp_host:  # it would wait in moi:mail forever, the secret with it
        raise InvalidValue("email", "this server sends no mail")
    job_id, _, _ = submission.submit(
        name,
        ANONYMOUS_OWNER,
        params,
        files=uploads_only(files),
        email=email,
        job_name=job_name,
        origin=WEB,  # uploads only (checked above); the web's policy besides
        limits=Limits(settings.hog_size, settings.anonymous_max_queued),
        anonymous=True,
    )
    link = Link(job_id, secrets.token_urlsafe(SECRET_BYTES))
    store = connections.store()
    info = store.get(job_id)
    with reaching(store.url):
        pipe = store.redis.pipeline(transaction=False)
        # Kept a day past the job's own life at submission: a later write renews the job's, not this one's.
        pipe.set(store.keys.anonymous_link(job_id), _digest(link.secret), ex=store.ttl_of(info) + 86400)
        if email:
            mail = {"job": job_id, "to": LINK_MAIL, "link": _full(site, link.path)}
            pipe.rpush(store.keys.mail, json.dumps(mail))
        pipe.execute()
    return link


def uploads_only(files: Any) -> dict[str, bytes] | None:
    """An anonymous job's inputs: uploaded bytes by name, or none. A path (even inside ``[files] input_roots``)
    or a URI is refused: anyone could read the server's files or make it fetch its own network's addresses."""
    if files is None:
        return None
    if isinstance(files, Mapping) and all(
        isinstance(key, str) and isinstance(value, bytes | bytearray) for key, value in files.items()
    ):
        return {key: bytes(value) for key, value in files.items()} or None
    raise InputRefused("files", "an anonymous job takes uploaded files only (multipart/form-data), no path or URI")


# What a link shows of its job and of its steps: no engine, owner, group, channel, context, ttl or
# retention of the server's, and of a failure's traceback (server paths) its last line only.
LINK_FIELDS = ("id", "type", "name", "status", "service", "result", "result_format", "revision", "ran")
LINK_DATES = ("date_created", "date_start", "date_end")


def link_view(info: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """The fields of ``info`` (the link's job ``job_id``, or one of its steps) a link's holder is shown."""
    shown = {name: info[name] for name in (*LINK_FIELDS, *LINK_DATES) if name in info}
    if info.get("parent") == job_id:  # a step names its job (which the holder knows), never a job its group
        shown["parent"] = job_id
    files = info.get("files")
    if isinstance(files, Mapping) and isinstance(files.get("count"), int):
        shown["files"] = {"count": files["count"]}
    if info.get("status") == Status.FAILED and isinstance(shown.get("result"), str):
        lines = [line for line in shown["result"].splitlines() if line.strip()]
        shown["result"] = lines[-1] if lines else ""
    return shown


def link_keys(keys: Keys, job_id: str) -> list[str]:
    """What a link's check reads, in one round trip: the secret's hash, and the job's info (for an id that
    is no job id, those of one that cannot be a job's: the same read, and no other key named by a client)."""
    job_id = job_id if is_uuid(job_id) else _NO_ID
    return [keys.anonymous_link(job_id), keys.info(job_id)]


def job_of_link(store: Store, job_id: str, secret: str) -> Info | None:
    """The job a link names when its secret is right and the job still has a link; None otherwise."""
    with reaching(store.url):
        kept, raw = store.redis.mget(link_keys(store.keys, job_id))
    return verdict(store.keys, job_id, secret, kept, raw)


def verdict(keys: Keys, job_id: str, secret: str, kept: str | None, raw: str | None) -> Info | None:
    """A link's job from what ``link_keys`` read: None for a wrong secret, an unknown id, a job expired or
    removed, with the same work whichever it is (one comparison of digests, in constant time)."""
    right = hmac.compare_digest(str(kept or _NO_LINK), _digest(secret[:MAX_SECRET]))
    if kept is None or raw is None or not right or len(secret) > MAX_SECRET or not is_uuid(job_id):
        return None
    try:
        info = parse(keys.info(job_id), raw, job_id)
    except BadDocument:
        return None
    if info.get("type") != "job" or not info.get("anonymous") or info.get("status") == Status.EXPIRED:
        return None
    return info


def rate_key(keys: Keys, address: str, moment: float) -> str:
    """The counter of anonymous submissions from ``address`` (its scope) in the clock hour of ``moment``;
    it should live ``RATE_WINDOW`` seconds."""
    return keys.anonymous_rate(address_scope(address), int(moment) // _HOUR)


RATE_HOUR = _HOUR  # the count's window: a clock hour
RATE_WINDOW = 2 * _HOUR + 60  # how long its counter lives: the next hour reads it too (a sliding hour)


def address_scope(address: str) -> str:
    """What one client is counted by: an IPv4 address, the /64 of an IPv6 one (one host's whole share)."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return printable(address, 60)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _full(site: str, path: str) -> str:
    """The link as mailed: the site's address in front, or, with none configured, the path and what it is on."""
    if site:
        return site.rstrip("/") + path
    return f"{path} on the site where you submitted it (its address is not configured: [moi] site_url)"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
