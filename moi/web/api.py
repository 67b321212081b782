"""The HTTP API, ``/api/v1/``, JSON: submit, read and act on jobs, as the websocket does.

Every route is authorised per user: ``Authorization: Bearer <token>`` (see
``moi.storage.tokens``) or the login cookie, which then needs Tornado's XSRF token like
any form. A user reaches only their own tree; an admin token, every user's.
Errors are ``{"error": "...", "code": "..."}`` with their status: 400 (a body
that is not a JSON object), 401 (no or a bad token), 403 (code from a user without
the grant; see ``moi.compute.sandbox``), 404 (no such job, or not
yours: the same answer, so nothing leaks), 409 (the action does not fit the
job's state), 413 (a JSON body, or one field of a form, over ``moi_api_max_body``, or an upload
over ``[moi] max_upload``), 422 (a bad parameter or input, or a value JSON and Redis's Lua cannot
hold: NaN, 1e999, 10**309, a lone surrogate, a control character; see ``moi.core.values``), 429 (the user's hard limit,
with ``Retry-After``), 503 (Redis unreachable).

    POST   /api/v1/jobs                 {"cmd", "cmd_type"} or {"service", "params"}; name, url, priority, email, group;
                                        or multipart/form-data: those as fields (params as JSON), input files as files
    GET    /api/v1/jobs                 ?status=&service=&group=&since=&until=&q=&limit=&cursor=
    GET    /api/v1/jobs/{id}
    DELETE /api/v1/jobs/{id}            the job (cancelled first) and its files
    POST   /api/v1/jobs/{id}/cancel     also relaunch, pause, resume
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tornado.web import HTTPError, RequestHandler

from moi import services
from moi.compute.commands import check_code
from moi.core import values
from moi.core.errors import (
    CodeRefused,
    EngineCountRefused,
    FilesNotRemoved,
    InputRefused,
    InvalidCode,
    InvalidId,
    InvalidPriority,
    InvalidUserName,
    InvalidValue,
    MoiError,
    NotInGroup,
    QuotaExceeded,
    RedisRefused,
    RedisUnavailable,
    ServiceError,
    UnknownContext,
    UnknownId,
    UnknownService,
    ValidationFailed,
    WrongState,
)
from moi.core.info import Info, is_finished, is_uuid
from moi.core.keys import user_name_problem
from moi.core.redact import printable
from moi.jobfiles import removal as job_files
from moi.jobfiles.input_policy import WEB
from moi.jobs import connections, grant
from moi.jobs import submit as jobs
from moi.jobs.cancel import cancel
from moi.jobs.submit import submit_code
from moi.queue import jobqueue as queue
from moi.queue import listing
from moi.relay import bearer
from moi.relay.group import remove_nodes
from moi.relay.websocket import cookie_user, hub_for, user_group
from moi.storage.store import Store, store_for

log = logging.getLogger("moi.api")

PREFIX = "/api/v1"
MAX_BODY_SETTING = "moi_api_max_body"
MAX_BODY = 1 << 20  # bytes of a JSON body
MAX_UPLOAD_SETTING = "moi_api_max_upload"  # bytes of a multipart body (input files); default [moi] max_upload
RETRY_AFTER = 10  # seconds a client refused by the hard limit is told to wait
T = TypeVar("T")

# moi's errors -> (HTTP status, code); the first match wins, so subclasses come first
_STATUS: list[tuple[type[MoiError], int, str]] = [
    (CodeRefused, 403, "forbidden"),
    (UnknownService, 422, "unknown_service"),
    (ValidationFailed, 422, "invalid"),
    (InvalidPriority, 422, "invalid"),
    (InvalidCode, 422, "invalid"),
    (InvalidUserName, 422, "invalid"),
    (InvalidValue, 422, "invalid"),
    (UnknownContext, 422, "invalid"),
    (ServiceError, 422, "invalid"),
    (InputRefused, 422, "invalid"),
    (FilesNotRemoved, 409, "conflict"),
    (NotInGroup, 404, "not_found"),
    (UnknownId, 404, "not_found"),
    (InvalidId, 404, "not_found"),
    (WrongState, 409, "conflict"),
    (EngineCountRefused, 409, "conflict"),
    (QuotaExceeded, 429, "hard_limit"),
    (RedisUnavailable, 503, "unavailable"),
    (RedisRefused, 503, "unavailable"),
]


class Problem(HTTPError):
    """An error answered as ``{"error": text, "code": code}``."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(status, text)
        self.code, self.text = code, text


def problem_of(error: MoiError) -> Problem:
    for kind, status, code in _STATUS:
        if isinstance(error, kind):
            return Problem(status, code, str(error))
    return Problem(400, "bad_request", str(error))


class APIHandler(RequestHandler):
    """A JSON route: the user from a Bearer token or the cookie; errors as JSON."""

    admin = False

    def get_current_user(self) -> Any:
        return cookie_user(self.get_signed_cookie("user"))

    def check_xsrf_cookie(self) -> None:
        if "Authorization" in self.request.headers:
            return  # a token is not sent by a browser on its own: no cross-site forgery to guard against
        super().check_xsrf_cookie()

    async def prepare(self) -> None:
        try:
            self.admin = await bearer.authenticate(self, hub_for(self.application))
        except MoiError as error:  # Redis away (a server stopping, say): 503, which clients retry
            raise problem_of(error) from None
        user = self.current_user
        if not user or user_name_problem(str(user)) is not None:
            raise Problem(401, "unauthorized", "log in, or send Authorization: Bearer <token>")
        limit = self._body_limit()
        if len(self.request.body or b"") > limit:
            raise Problem(413, "too_large", f"the body is over {limit} bytes")

    def _body_limit(self) -> int:
        if self.request.headers.get("Content-Type", "").startswith("multipart/form-data"):
            return int(self.settings.get(MAX_UPLOAD_SETTING) or connections.settings().max_upload)
        return int(self.settings.get(MAX_BODY_SETTING, MAX_BODY))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if status_code == 500 and error is None:  # Tornado ending a request it could not finish: a server stopping
            status_code = 503
            self.set_status(503)
            error = Problem(503, "unavailable", "the server is stopping; try again")
        if isinstance(error, Problem):
            code, text = error.code, error.text
        elif isinstance(error, HTTPError):
            code, text = (
                {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status_code, "error"),
                (error.log_message or self._reason),
            )
        else:
            code, text = "internal", "the server failed on this request; its log says why"
        if status_code == 429:
            self.set_header("Retry-After", str(RETRY_AFTER))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": text, "code": code}))

    def answer(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def body(self) -> dict[str, Any]:
        """The JSON object sent (or the multipart form, as one). A value that JSON and Redis's Lua cannot hold
        as it is (NaN, 1e999, 10**309, a lone surrogate, a control character; see ``moi.core.values``): 422."""
        try:
            if self.request.headers.get("Content-Type", "").startswith("multipart/form-data"):
                value = self._form()
            else:
                value = self._json()
            values.check(value, "")
        except MoiError as error:
            raise problem_of(error) from None
        return value

    def _json(self) -> dict[str, Any]:
        try:
            value = values.loads(self.request.body or b"")
        except (ValueError, RecursionError):
            raise Problem(400, "bad_request", "the body is not JSON") from None
        if not isinstance(value, dict):
            raise Problem(400, "bad_request", "the body is not a JSON object")
        return value

    def _form(self) -> dict[str, Any]:
        """A multipart body as the JSON one: its fields (``params`` as JSON text), and its files under ``files``.
        Each field is held to the JSON body's limit: only files may be larger."""
        limit = int(self.settings.get(MAX_BODY_SETTING, MAX_BODY))
        for name, parts in self.request.body_arguments.items():
            if sum(len(part) for part in parts) > limit:
                raise Problem(413, "too_large", f"the field {printable(name, 40)!r} is over {limit} bytes")
        given: dict[str, Any] = {
            name: parts[-1].decode("utf-8", "replace") for name, parts in self.request.body_arguments.items()
        }
        if "params" in given:
            try:
                given["params"] = values.loads(given["params"])
            except (ValueError, RecursionError):
                raise Problem(422, "invalid", '"params" is a JSON object') from None
        if "priority" in given and values.is_whole(given["priority"], signed=True):
            given["priority"] = int(given["priority"])
        uploads = [upload for parts in self.request.files.values() for upload in parts]
        names = [upload.filename for upload in uploads]
        if len(set(names)) != len(names):
            raise Problem(422, "invalid", "two uploaded files have the same name")
        given["files"] = {upload.filename: upload.body for upload in uploads}
        return given

    @property
    def store(self) -> Store:
        hub = hub_for(self.application)
        return store_for(hub.url, hub.keys.prefix, hub.ttl)

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking moi call in a thread; moi's errors become their HTTP answers."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))
        except MoiError as error:
            raise problem_of(error) from None

    def asked_priority(self, given: dict[str, Any]) -> int:
        """The priority asked for; above ``[moi] max_user_priority`` 422, unless the user is an admin."""
        ceiling = None if self.admin else connections.settings().max_user_priority
        try:
            return queue.within_ceiling(given.get("priority"), ceiling)
        except MoiError as error:
            raise problem_of(error) from None

    async def may_run_code(self) -> bool:
        """An admin, a user of [security] code_users, or a token made with --code (looked up again: it is rare)."""
        if grant.granted(str(self.current_user), self.admin, token_code=False):
            return True
        try:
            found = await bearer.token_of(self, hub_for(self.application))
        except MoiError as error:
            raise problem_of(error) from None
        return found is not None and found.code

    async def my_group(self) -> str:
        try:
            return await user_group(hub_for(self.application), str(self.current_user))
        except MoiError as error:
            raise problem_of(error) from None

    async def owned(self, job_id: str) -> Info:
        """The job, when it is in the user's tree (or the user is an admin); 404 otherwise."""
        if not is_uuid(job_id):
            raise Problem(404, "not_found", f"Unknown job id: {job_id[:80]}")
        info = await self.run(self.store.get, job_id)
        if info.get("type") != "job":
            raise Problem(404, "not_found", f"Unknown job id: {job_id}")
        if not self.admin and await self.run(self.store.owner_of, job_id) != await self.my_group():
            raise Problem(404, "not_found", f"Unknown job id: {job_id}")
        return info


class JobsHandler(APIHandler):
    async def get(self) -> None:
        """The user's jobs (an admin's: everyone's), newest first, filtered, a page at a time.
        ---
        parameters:
          - {name: status, in: query, schema: {type: string}, description: "Queued, Running, Success, ..."}
          - {name: service, in: query, schema: {type: string}}
          - {name: group, in: query, schema: {type: string}, description: the id of one of your groups}
          - {name: since, in: query, schema: {type: string}, description: created at or after (a date prefix)}
          - {name: until, in: query, schema: {type: string}, description: created before}
          - {name: q, in: query, schema: {type: string}, description: a part of the job's name}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000, default: 50}}
          - {name: cursor, in: query, schema: {type: integer, minimum: 0}, description: the last page's "next"}
        """
        limit = self._number("limit", 50, 1, listing.MAX_LIMIT)
        cursor = self._number("cursor", None, 0, 2**62)
        group = self.get_query_argument("group", None)
        filters = listing.Filters(
            status=self.get_query_argument("status", None),
            service=self.get_query_argument("service", None),
            group=await self._group(group) if group is not None else None,
            since=self.get_query_argument("since", None),
            until=self.get_query_argument("until", None),
            name=self.get_query_argument("q", None),
        )
        keys = hub_for(self.application).keys
        index = keys.index_all if self.admin else keys.index(await self.my_group())
        found, after = await self.run(listing.page, self.store, index, filters, limit, cursor)
        self.answer({"jobs": [dict(info) for info in found], "next": after})

    def _number(self, name: str, default: int | None, low: int, high: int) -> Any:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        if not values.is_whole(text, signed=True) or not low <= int(text) <= high:
            raise Problem(400, "bad_request", f"{name} is a whole number from {low} to {high}")
        return int(text)

    async def post(self) -> None:
        """Submit a job: a service with its parameters and input files, or (with the grant) Python or shell code.
        ---
        requestBody:
          content:
            application/json:
              schema: {$ref: "#/components/schemas/NewJob"}
            multipart/form-data:
              schema:
                type: object
                properties:
                  service: {type: string}
                  params: {type: string, description: a JSON object}
                  name: {type: string}
                  url: {type: string}
                  priority: {type: string}
                  email: {type: string}
                  group: {type: string}
                  input: {type: array, items: {type: string, format: binary}, description: the input files}
        responses:
          201: {description: "the new job: {id, group}"}
          403: {description: code from a user without the grant}
          409: {description: the job cannot be taken now}
          413: {description: the body or an upload is too large}
          422: {description: a bad parameter or input}
          429: {description: your hard limit of unfinished jobs}
        """
        given = self.body()
        group = await self._group(given.get("group"))
        if given.get("files") and "service" not in given:
            raise Problem(422, "invalid", "input files go with a service job; a command job takes none")
        if "service" in given:
            job_id, group_id = await self._service_job(given, group)
        elif "cmd" in given:
            job_id, group_id = await self._command_job(given, group)
        else:
            raise Problem(422, "invalid", 'give "cmd" (with "cmd_type") or "service" (with "params")')
        self.set_header("Location", f"{PREFIX}/jobs/{job_id}")
        self.answer({"id": job_id, "group": group_id}, 201)

    async def _group(self, given: Any) -> str:
        """Where the job goes: the user's own group, or a group of their tree."""
        mine = await self.my_group()
        if given is None:
            return mine
        if not isinstance(given, str) or not is_uuid(given):
            raise Problem(422, "invalid", '"group" is the id of one of your groups')
        if mine not in await self.run(self.store.chain_of, given):
            raise Problem(404, "not_found", f"Unknown group id: {given}")
        return given

    async def _service_job(self, given: dict[str, Any], group: str) -> tuple[str, str]:
        params = given.get("params") or {}
        uploaded = self.request.headers.get("Content-Type", "").startswith("multipart/form-data")
        files = given.get("files") if uploaded else _json_files(given.get("files"))
        if not isinstance(params, dict) or not isinstance(given["service"], str):
            raise Problem(422, "invalid", '"service" is a name and "params" an object')
        job_id, group_id, _ = await self.run(
            services.submit,
            given["service"],
            str(self.current_user),
            params,
            files=files or None,
            email=_text(given, "email"),
            group=group,
            url=_text(given, "url"),
            priority=self.asked_priority(given),
            job_name=_text(given, "name"),
            origin=WEB,  # a web user's inputs: uploads, URIs the policy allows, paths only inside input roots
        )
        return job_id, group_id

    async def _command_job(self, given: dict[str, Any], group: str) -> tuple[str, str]:
        """Python or shell code: for a granted user only, run as their own uid in a child (see moi.compute.sandbox)."""
        if not await self.may_run_code():
            raise Problem(403, "forbidden", grant.GRANT_NEEDED)
        cmd, kind = given["cmd"], given.get("cmd_type", "python")
        if not isinstance(cmd, str) or kind not in ("python", "system"):
            raise Problem(422, "invalid", '"cmd" is text and "cmd_type" python or system')
        if kind == "python":
            await self.run(check_code, cmd)
        place = await self.run(grant.placement, self.store, str(self.current_user))
        name = _text(given, "name") or "api job"
        level = self.asked_priority(given)
        return await self.run(submit_code, group, name, _text(given, "url"), kind, cmd, place, level)


class JobHandler(APIHandler):
    async def get(self, job_id: str) -> None:
        self.answer(dict(await self.owned(job_id)))

    async def delete(self, job_id: str) -> None:
        info = await self.owned(job_id)
        if not is_finished(info):
            await self.run(cancel, job_id, self.store)
        hub = hub_for(self.application)
        try:
            await remove_nodes(hub.redis, hub.keys, [job_id])
        except MoiError as error:
            raise problem_of(error) from None
        await self.run(job_files.remove_directories, [job_id], {job_id: info})
        self.set_status(204)
        self.finish()


class JobActionHandler(APIHandler):
    async def post(self, job_id: str, action: str) -> None:
        """Cancel, relaunch, pause or resume a job; its info (relaunch: the new job).
        ---
        responses:
          201: {description: "relaunched: the new job, {id, group}"}
          403: {description: relaunching code without the grant to run code}
          409: {description: the action does not fit the job's state}
        """
        info = await self.owned(job_id)
        if action == "cancel":
            report = await self.run(cancel, job_id, self.store)
            if not (report.cancelled or report.requested):
                raise Problem(409, "conflict", report.summary(job_id))
        elif action == "relaunch":
            granted = await self.may_run_code()  # code is run again only with the grant (see moi.compute.sandbox)
            new_id, group_id, _ = await self.run(jobs.relaunch, job_id, self.store, granted)
            self.set_header("Location", f"{PREFIX}/jobs/{new_id}")
            self.answer({"id": new_id, "group": group_id}, 201)
            return
        elif action in ("pause", "resume"):
            done = await self.run(getattr(jobs, action), job_id=job_id)
            if not done:
                raise Problem(409, "conflict", f"Job {job_id} is {info.get('status')}: only a queued job is {action}d")
        self.answer(dict(await self.run(self.store.get, job_id)))


def _json_files(value: Any) -> list[str] | None:
    """A JSON body's inputs: a list of URIs (or paths inside the operator's input roots); files are uploaded."""
    if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
        raise Problem(422, "invalid", '"files" is a list of URIs; upload files with multipart/form-data')
    return value


def _text(given: dict[str, Any], name: str) -> str | None:
    value = given.get(name)
    if value is not None and not isinstance(value, str):
        raise Problem(422, "invalid", f'"{name}" is text')
    return value


ROUTES = [
    (rf"{PREFIX}/jobs", JobsHandler),
    (rf"{PREFIX}/jobs/([^/]+)", JobHandler),
    (rf"{PREFIX}/jobs/([^/]+)/(cancel|relaunch|pause|resume)", JobActionHandler),
]
