"""A job submission's body, read as one dict: the JSON object sent, or a multipart form as one.

``POST /api/v1/jobs`` (``moi.web.api``) takes either; a form's fields are text (``params`` as JSON
text) and its input files come under ``files``. ``text_field`` and ``json_files`` check the fields
that are the same in both; ``asked_policy`` reads a job's time limit and retries from either, ``asked_resources``
what it asks of a batch scheduler (``resources``: an object, in a form as JSON text).
"""

from __future__ import annotations

from typing import Any

from tornado.httputil import HTTPServerRequest

from moi.core import resources, values
from moi.core.errors import InvalidValue, MoiError
from moi.core.policy import POLICY_NAMES, Policy
from moi.core.redact import printable
from moi.web.api_handler import Problem, is_form, problem_of

# A form's text fields, as a JSON body's keys (``_xsrf``: a page's form may send its token as a field).
FORM_FIELDS = frozenset(
    {
        "service",
        "params",
        "cmd",
        "cmd_type",
        "name",
        "url",
        "email",
        "group",
        "priority",
        "_xsrf",
        "resources",
        *POLICY_NAMES,
    }
)


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
    unknown = sorted(set(request.body_arguments) - FORM_FIELDS)
    if unknown:  # a service's parameter sent as a field of its own would be dropped: say so instead
        named = ", ".join(repr(printable(name, 40)) for name in unknown[:5])
        raise Problem(422, "invalid", f'unknown field {named}: a service\'s parameters go in "params" (JSON)')
    given: dict[str, Any] = {
        name: parts[-1].decode("utf-8", "replace") for name, parts in request.body_arguments.items()
    }
    if "retry_on" in given:  # repeatable, as --retry-on is: every part, as one comma list
        given["retry_on"] = ",".join(part.decode("utf-8", "replace") for part in request.body_arguments["retry_on"])
    _read_objects(given)
    if "priority" in given and values.is_whole(given["priority"], signed=True):
        given["priority"] = int(given["priority"])
    uploads = [upload for parts in request.files.values() for upload in parts]
    names = [upload.filename for upload in uploads]
    if len(set(names)) != len(names):
        raise Problem(422, "invalid", "two uploaded files have the same name")
    given["files"] = {upload.filename: upload.body for upload in uploads}
    return given


def _read_objects(given: dict[str, Any]) -> None:
    """A form's ``params`` and ``resources``: objects, sent as JSON text; an empty ``resources``, none asked."""
    if not given.get("resources", "x").strip():
        del given["resources"]
    for name in ("params", "resources"):
        if name in given:
            try:
                given[name] = values.loads(given[name])
            except (ValueError, RecursionError):
                raise Problem(422, "invalid", f'"{name}" is a JSON object') from None


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


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def asked_policy(given: dict[str, Any], form: bool) -> Policy:
    """A job's time limit and retries as a submission asks, not yet checked (``moi.jobs.job_policy`` does).
    A form's fields are text: an empty one is not asked, ``idempotent`` is true or false; in either body
    ``retry_on`` may be one comma list (``OSError,75``) as well as a list."""
    asked = {name: given.get(name) for name in POLICY_NAMES}
    if form:
        asked = {name: None if isinstance(value, str) and not value.strip() else value for name, value in asked.items()}
        idempotent = asked["idempotent"]
        if isinstance(idempotent, str) and idempotent.strip().lower() in _TRUE + _FALSE:
            asked["idempotent"] = idempotent.strip().lower() in _TRUE
    if isinstance(asked["retry_on"], str):
        asked["retry_on"] = [part.strip() for part in asked["retry_on"].split(",")]
    return Policy(**asked)


def asked_resources(given: dict[str, Any]) -> resources.Resources:
    """What a submission asks of a batch scheduler (``{"cores": 4, "memory": "128G"}``), checked: 422 naming the
    resource for a bad one, or for a name that is none (a web user names no shared files by URI here).
    Whether the job's context can give them is ``moi.jobs.job_policy.resource_fields``'s to say."""
    asked = given.get("resources")
    if asked is None:
        return {}
    if not isinstance(asked, dict):
        raise Problem(422, "invalid", f'"resources" is an object of {", ".join(resources.RESOURCE_NAMES)}')
    names = ", ".join(resources.RESOURCE_NAMES)
    unknown = [name for name in asked if name not in resources.RESOURCE_NAMES]
    if unknown:
        raise Problem(422, "invalid", f"there is no resource {printable(unknown[0], 40)!r}; the resources are {names}")
    try:
        return resources.checked(asked)
    except InvalidValue as error:
        raise problem_of(error) from None
