"""A job submission's body, read as one dict: the JSON object sent, or a multipart form as one.

``POST /api/v1/jobs`` (``moi.web.api``) takes either; a form's fields are text (``params`` as JSON
text) and its input files come under ``files``. ``text_field`` and ``json_files`` check the fields
that are the same in both.
"""

from __future__ import annotations

from typing import Any

from tornado.httputil import HTTPServerRequest

from moi.core import values
from moi.core.errors import MoiError
from moi.core.redact import printable
from moi.web.api_handler import Problem, is_form, problem_of


def submitted(request: HTTPServerRequest, field_limit: int) -> dict[str, Any]:
    """The JSON object sent (or the multipart form, as one). A value that JSON and Redis's Lua cannot hold
    as it is (NaN, 1e999, 10**309, a lone surrogate, a control character; see ``moi.core.values``): 422."""
    try:
        value = _form(request, field_limit) if is_form(request) else _json(request)
        values.check(value, "")
    except MoiError as error:
        raise problem_of(error) from None
    return value


def _json(request: HTTPServerRequest) -> dict[str, Any]:
    try:
        value = values.loads(request.body or b"")
    except (ValueError, RecursionError):
        raise Problem(400, "bad_request", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Problem(400, "bad_request", "the body is not a JSON object")
    return value


def _form(request: HTTPServerRequest, limit: int) -> dict[str, Any]:
    """A multipart body as the JSON one: its fields (``params`` as JSON text), and its files under ``files``.
    Each field is held to the JSON body's limit: only files may be larger."""
    for name, parts in request.body_arguments.items():
        if sum(len(part) for part in parts) > limit:
            raise Problem(413, "too_large", f"the field {printable(name, 40)!r} is over {limit} bytes")
    given: dict[str, Any] = {
        name: parts[-1].decode("utf-8", "replace") for name, parts in request.body_arguments.items()
    }
    if "params" in given:
        try:
            given["params"] = values.loads(given["params"])
        except (ValueError, RecursionError):
            raise Problem(422, "invalid", '"params" is a JSON object') from None
    if "priority" in given and values.is_whole(given["priority"], signed=True):
        given["priority"] = int(given["priority"])
    uploads = [upload for parts in request.files.values() for upload in parts]
    names = [upload.filename for upload in uploads]
    if len(set(names)) != len(names):
        raise Problem(422, "invalid", "two uploaded files have the same name")
    given["files"] = {upload.filename: upload.body for upload in uploads}
    return given


def json_files(value: Any) -> list[str] | None:
    """A JSON body's inputs: a list of URIs (or paths inside the operator's input roots); files are uploaded."""
    if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
        raise Problem(422, "invalid", '"files" is a list of URIs; upload files with multipart/form-data')
    return value


def text_field(given: dict[str, Any], name: str) -> str | None:
    value = given.get(name)
    if value is not None and not isinstance(value, str):
        raise Problem(422, "invalid", f'"{name}" is text')
    return value
