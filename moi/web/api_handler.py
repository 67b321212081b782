"""The HTTP API's shared base: who is asking, and how they are answered (JSON, errors as problems).

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

The routes: jobs in ``moi.web.api``, the rest in ``moi.web.api_ops`` and ``moi.web.metrics``; a submission's
body is read in ``moi.web.api_submission``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from tornado.httputil import HTTPServerRequest
from tornado.web import HTTPError, RequestHandler

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
from moi.core.info import Info, is_uuid
from moi.core.keys import user_name_problem
from moi.jobs import connections, grant
from moi.queue import jobqueue as queue
from moi.relay import bearer
from moi.relay.session_check import confirmed
from moi.relay.websocket import cookie_user, hub_for, user_group
from moi.storage.store import Store, store_for

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


def is_form(request: HTTPServerRequest) -> bool:
    """A multipart body (a form with input files) rather than JSON."""
    return request.headers.get("Content-Type", "").startswith("multipart/form-data")


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
            self.current_user = await confirmed(self, hub_for(self.application), self.current_user)
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
        if is_form(self.request):
            return int(self.settings.get(MAX_UPLOAD_SETTING) or connections.settings().max_upload)
        return self.json_limit()

    def json_limit(self) -> int:
        """Bytes of a JSON body, or of one field of a form."""
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
