"""Anonymous jobs over the web: the submission, and the one job its secret link reaches.

    GET  /anonymous                                     the form: a service open to all, its parameters and files
    GET  /api/v1/anonymous/services                     the services open to all, as /api/v1/services shows them
    POST /api/v1/anonymous/jobs                         {"service", "params", "name", "email"}, or multipart
                                                         with input files: 201 {"id", "link"}; no account
    GET  /api/v1/anonymous/jobs/{id}/{secret}           the job's info
    GET  /api/v1/anonymous/jobs/{id}/{secret}/files[/{path}]  its files, as /moi-files/ serves them
    GET  /api/v1/anonymous/jobs/{id}/{secret}/log       its framework.log
    GET  /r/{id}/{secret}                               its page, live (the job page with no way elsewhere)
    WS   /r/{id}/{secret}/ws                            its socket: that job and its steps, verbs get, log, close

The link is a capability, checked on every request by ``moi.services.anonymous.job_of_link``; nothing here
reads a login cookie, a session or a token, sets a cookie, or reaches another job. A wrong secret, an
unknown id and an expired job get one and the same 404. The secret is kept out of the access log (each
handler's request summary shows ``/r/<id>/…``), out of a Referer (``Referrer-Policy: no-referrer``) and out
of caches (``Cache-Control: no-store``). Submissions are counted per client address (``[anonymous]
max_per_hour_per_address``; its socket's address, or behind a proxy listed in ``[server] trusted_proxies``
the address that proxy saw).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import redis
from tornado.log import access_log, app_log
from tornado.web import HTTPError, RequestHandler
from tornado.websocket import WebSocketHandler

from moi.core.config import Settings
from moi.core.errors import MoiError, QuotaExceeded, RedisUnavailable
from moi.core.info import Info, Status
from moi.jobfiles.log_tail import LOG_NAME
from moi.jobs import connections
from moi.relay.group import Group
from moi.relay.hub import Hub
from moi.relay.outbound import CLOSE_POLICY
from moi.relay.websocket import MOIMessageHandler, hub_for
from moi.services import anonymous, registry
from moi.web import anonymous_limits as limits
from moi.web.api_handler import PREFIX, APIHandler, Problem, is_form, problem_of
from moi.web.api_submission import submitted, text_field
from moi.web.file_routes import MOIFilesHandler
from moi.web.proxy import client_address  # one reading of X-Forwarded-For, with the proxy secret

FIELDS = frozenset({"service", "params", "files", "name", "email", "_xsrf"})
NO_LINK = "No such link: it is wrong, or its job has expired"
NO_FILE = "No such file in this job"
SERVICES_SECONDS = 5.0  # how long the list of services open to all is reused
_SERVICES_CACHE = "moi_anonymous_services"  # application setting: that list, and until when it is reused
LINK_SOCKETS_SETTING = "moi_max_link_sockets"  # application setting: every link socket of a process, at most
MAX_LINK_SOCKETS = 2000
_LINK_SOCKETS = "moi_link_sockets"  # application setting: the link sockets open in this process
_SECRET_IN_PATH = re.compile(r"(/(?:r|anonymous/jobs)/[^/?]*/)[^/?]+")


def redacted(uri: str) -> str:
    """A request's path with a link's secret left out, for the log."""
    return _SECRET_IN_PATH.sub(r"\1…", uri)


def log_request(handler: RequestHandler) -> None:
    """The access log's line of any request (``make_app``'s ``log_function``), as Tornado's own but with a
    link's secret left out: a path near a link's (``/r/ID/SECRET/x``) that no handler takes is logged too."""
    status = handler.get_status()
    method = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
    # The handler's own summary (the oidc callback's drops its query), then any link's secret left out.
    summary = redacted(handler._request_summary())
    method("%d %s %.2fms", status, summary, 1000.0 * handler.request.request_time())


class _Capability(RequestHandler):
    """What every handler reached by a link shares: no login, the secret kept out of logs and Referers."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {redacted(self.request.uri or '')} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, HTTPError):
            super().log_exception(typ, value, tb)  # one line, with the redacted summary
            return
        # Tornado's own adds the request's repr, which holds the path, secret and all
        app_log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))

    async def linked(self, job_id: str, secret: str) -> Info:
        """The link's job; one 404 for every link that does not lead to one."""
        try:
            info = await anonymous_job(hub_for(self.application), job_id, secret)
        except MoiError as error:
            raise problem_of(error) from None
        if info is None:
            raise Problem(404, "not_found", NO_LINK)
        return info


async def _in_thread(func: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


class _NoLogin(_Capability, APIHandler):
    async def prepare(self) -> None:  # no login: the body's size is the only check before the handler's own
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        limit = self._body_limit()
        if len(self.request.body or b"") > limit:
            raise Problem(413, "too_large", f"the body is over {limit} bytes")

    def _body_limit(self) -> int:
        limit = super()._body_limit()  # anyone's uploads: held to [anonymous] max_upload, below [moi] max_upload
        return min(limit, connections.settings().anonymous_max_upload) if is_form(self.request) else limit

    def check_xsrf_cookie(self) -> None:
        return  # nothing of a login is used here, so a forged request gains nothing a direct one would not


class AnonymousJobsHandler(_NoLogin):
    async def post(self) -> None:
        """Submit a job of a service open to anonymous users, without an account; the answer holds its secret link.
        ---
        security: []
        requestBody:
          content:
            application/json:
              schema: {$ref: "#/components/schemas/AnonymousJob"}
            multipart/form-data:
              schema: {$ref: "#/components/schemas/AnonymousJobForm"}
        responses:
          201: {description: "the new job: {id, link}; the link (/r/ID/SECRET) is the only way back to it"}
          403: {description: "code was sent"}
          413: {description: the body or an upload is too large}
          422: {description: "a bad parameter, input or field; a service unknown or not open to all (one answer)"}
          429: {description: "this address's anonymous jobs this hour, or all anonymous jobs unfinished"}
        """
        given = submitted(self.request, self.json_limit())
        _check_fields(given, is_form(self.request))
        settings = connections.settings()
        await self._counted(given, settings)
        params = given.get("params") or {}
        if not isinstance(params, dict):
            raise Problem(422, "invalid", '"params" is an object')
        files = given.get("files") if is_form(self.request) else None
        try:  # the mailed link starts with [moi] site_url only, never the Host a client sent (a phishing host)
            link = await _in_thread(_submit, given, params, files, settings.site_url)
        except QuotaExceeded as error:
            text = f"{error.unfinished} anonymous jobs are unfinished, the most there may be; try again later"
            raise Problem(429, "hard_limit", text) from None
        except MoiError as error:
            raise problem_of(error) from None
        self.answer({"id": link.job_id, "link": link.path}, 201)

    async def _counted(self, given: dict[str, Any], settings: Settings) -> None:
        """The submission counted against its address (first: whatever follows costs more than a count), its
        service checked, and the link to be mailed counted against its address; 429 past a count."""
        hub = hub_for(self.application)
        try:
            await limits.count_address(hub, client_address(self.request), settings.anonymous_per_hour)
            await self.run(anonymous.anonymous_service, given.get("service"))
            await limits.count_mail(hub, text_field(given, "email") if settings.smtp_host else None)
        except limits.RateLimited as error:
            self.retry_after = error.retry_after
            raise


def _submit(given: dict[str, Any], params: dict[str, Any], files: Any, site: str) -> anonymous.Link:
    email, name = text_field(given, "email"), text_field(given, "name")
    return anonymous.submit(given["service"], params, files=files or None, email=email, job_name=name, site=site)


def _check_fields(given: dict[str, Any], form: bool) -> None:
    """An anonymous job is a service's, with its parameters and uploads: code, a field of the account's, or
    files named by path or URI (see ``anonymous.uploads_only``) are refused."""
    if not form and given.get("files") is not None:
        raise Problem(422, "invalid", "an anonymous job's files are uploaded (multipart), never paths or URIs")
    if "cmd" in given:
        raise Problem(403, "forbidden", "running code needs an account with the grant; anonymous jobs are a service's")
    unknown = sorted(set(given) - FIELDS)
    if unknown:
        named = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise Problem(422, "invalid", f"an anonymous job takes service, params, files, name and email, not {named}")


class AnonymousServicesHandler(_NoLogin):
    async def get(self) -> None:
        """The services anyone may submit without an account, each with its parameter schema and steps.
        ---
        security: []
        """
        cache = self.application.settings.setdefault(_SERVICES_CACHE, {})
        if cache.get("until", 0.0) < time.monotonic():  # a flood of this open page builds them once a while
            known = await self.run(registry.known, self.store)
            cache.update(
                until=time.monotonic() + SERVICES_SECONDS, found=[c.describe() for c in known.values() if c.anonymous]
            )
        self.answer({"services": cache["found"]})


class AnonymousSubmitPageHandler(RequestHandler):
    """The submit form of the services open to all: no login, no bar, no way into the dashboard."""

    def get(self) -> None:
        self.render("anonymous_submit.html")


class LinkJobHandler(_NoLogin):
    async def get(self, job_id: str, secret: str) -> None:
        """The info of the one job a secret link leads to (no account).
        ---
        security: []
        responses:
          404: {description: "a wrong secret, an unknown job or an expired one: the same answer"}
        """
        self.answer(anonymous.link_view(await self.linked(job_id, secret), job_id))


class LinkFilesHandler(_Capability, MOIFilesHandler):
    async def prepare(self) -> None:
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    async def head(self, job_id: str, secret: str, path: str | None = None) -> None:  # type: ignore[override]
        """The size and type of a file of a link's job, as GET answers them, without its body."""
        await self.get(job_id, secret, path, body=False)

    async def get(self, job_id: str, secret: str, path: str | None = None, body: bool = True) -> None:  # type: ignore[override]
        """The files of the one job a secret link leads to: a listing, or one file, whole or one Range.
        ---
        security: []
        parameters:
          - {name: Range, in: header, schema: {type: string}, description: "one range: bytes=START-END"}
          - {name: recursive, in: query, schema: {type: string, enum: ["0", "1"]}}
          - {name: download, in: query, schema: {type: string, enum: ["1"]}}
        responses:
          206: {description: the range asked for}
          410: {description: the job's files were removed by retention}
          416: {description: a Range that is not one range within the file}
        """
        await self.serve_linked(job_id, secret, path or "", body)

    async def serve_linked(self, job_id: str, secret: str, path: str, body: bool) -> None:
        try:
            info = await anonymous_job(hub_for(self.application), job_id, secret)
        except MoiError:
            self._answer(503, "the job store is unavailable; try again", "unavailable")
            return
        if info is None:
            self._answer(404, NO_LINK, "not_found")
            return
        await self.serve(job_id, str(info.get("status")), path, body)

    def _not_found(self, text: str) -> None:
        # One plain line: the owner's would name the CLI and the server's paths, nothing a link's holder has.
        self._answer(404, NO_FILE, "not_found")


class LinkLogHandler(LinkFilesHandler):
    async def head(self, job_id: str, secret: str) -> None:  # type: ignore[override]
        """The log's size and type, as GET answers them, without its body."""
        await self.get(job_id, secret, body=False)

    async def get(self, job_id: str, secret: str, body: bool = True) -> None:  # type: ignore[override]
        """The framework.log of the one job a secret link leads to, whole or one Range.
        ---
        security: []
        parameters:
          - {name: Range, in: header, schema: {type: string}, description: "one range: bytes=START-END"}
        """
        await self.serve_linked(job_id, secret, LOG_NAME, body)


class LinkPageHandler(_Capability, RequestHandler):
    """The job's page in a restricted mode: no bar, no crumbs, no actions, no link to another job."""

    async def get(self, job_id: str, secret: str) -> None:
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Robots-Tag", "noindex")
        try:
            info = await anonymous_job(hub_for(self.application), job_id, secret)
        except MoiError:
            raise HTTPError(503) from None
        if info is None:
            raise HTTPError(404)  # Tornado's page, the same for every link that leads nowhere
        base = f"{PREFIX}/anonymous/jobs/{job_id}/{secret}"
        self.render("link.html", job_id=job_id, link=(base, f"/r/{job_id}/{secret}/ws"))


class LinkSocket(_Capability, MOIMessageHandler):
    """A socket on one job and its steps: ``get``, ``log`` and ``close``; closed once the job expires."""

    VERBS = frozenset({"get", "log", "close"})

    async def get(self, job_id: str, secret: str) -> None:
        self.hub = hub_for(self.application)
        try:
            info = await anonymous_job(hub_for(self.application), job_id, secret)
        except MoiError:
            raise HTTPError(503, "job store unavailable") from None
        if info is None:
            raise HTTPError(404)
        self.group_id = job_id
        self.current_user = f"a link to job {job_id}"  # what the relay's log lines name: no login is read
        self._claim_link()
        try:
            await WebSocketHandler.get(self)
        finally:
            if self.ws_connection is None:
                self._release()

    def _claim_link(self) -> None:
        """One of the socket places of the client's address (IPv6: its /64), under a reserved name (never a
        user's), within a cap for every link socket of this process: a new link per submission gains nothing."""
        every: set[LinkSocket] = self.application.settings.setdefault(_LINK_SOCKETS, set())
        if len(every) >= int(self.settings.get(LINK_SOCKETS_SETTING, MAX_LINK_SOCKETS)):
            raise HTTPError(429, "too many open sockets")
        self._claim(f"moi:link:{anonymous.address_scope(client_address(self.request))}")
        every.add(self)

    def _release(self) -> None:
        self.application.settings.get(_LINK_SOCKETS, set()).discard(self)
        super()._release()

    async def open(self, *args: str, **kwargs: str) -> None:
        self._count_unsent()
        self.group = Group(self.hub, self.group_id, self.send, self.report)
        try:
            await self.group.start()
        except MoiError as error:
            self.refuse(str(error))
            self.close(1011, "job store unavailable")

    def send(self, action: str, info: Info) -> None:
        super().send(action, anonymous.link_view(info, self.group_id))  # never the server's fields
        if info.get("id") == self.group_id and (action == "remove" or info.get("status") == Status.EXPIRED):
            self.shut(CLOSE_POLICY, "the job has expired")  # its link ends with it


async def anonymous_job(hub: Hub, job_id: str, secret: str) -> Info | None:
    """The link's job, read on the event loop (one batched MGET, no thread): a flood of links asks no executor."""
    try:
        kept, raw = await hub.mget(anonymous.link_keys(hub.keys, job_id))
    except (redis.RedisError, OSError, TimeoutError) as error:
        raise RedisUnavailable(hub.url, error) from None
    return anonymous.verdict(hub.keys, job_id, secret, kept, raw)


class NearLinkHandler(_Capability, RequestHandler):
    """A path under a link's that nothing serves (``/r/ID/SECRET/x``): Tornado's 404, logged without its secret."""

    def prepare(self) -> None:
        raise HTTPError(404)


API_ROUTES = [
    (rf"{PREFIX}/anonymous/services", AnonymousServicesHandler),
    (rf"{PREFIX}/anonymous/jobs", AnonymousJobsHandler),
    (rf"{PREFIX}/anonymous/jobs/([^/]+)/([^/]+)", LinkJobHandler),
    (rf"{PREFIX}/anonymous/jobs/([^/]+)/([^/]+)/files(?:/(.*))?", LinkFilesHandler),
    (rf"{PREFIX}/anonymous/jobs/([^/]+)/([^/]+)/log", LinkLogHandler),
]
ROUTES = [
    *API_ROUTES,
    (r"/anonymous", AnonymousSubmitPageHandler),
    (r"/r/([^/]+)/([^/]+)", LinkPageHandler),
    (r"/r/([^/]+)/([^/]+)/ws", LinkSocket),
    (rf"(?:/r|{PREFIX}/anonymous/jobs)/[^/]*/[^/]*(?:/.*)?", NearLinkHandler),  # after the links': their near misses
]

__all__ = ["API_ROUTES", "ROUTES", "client_address", "log_request", "redacted"]
