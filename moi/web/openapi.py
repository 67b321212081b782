"""The API's OpenAPI 3 document, generated from its handlers, and an interactive page for it.

Each route of ``moi.web.api``, ``moi.web.api_ops`` and ``moi.web.api_accounts`` gives its paths (a regex
group becomes the parameter its method names: ``get(self, job_id)`` -> ``{job_id}``; an alternation of words,
one path per word); each handler method gives an operation: its docstring's first line is
the summary, a YAML part after ``---`` (apispec's convention) adds to it. So the document
cannot drift from what the server serves. ``GET /api/v1/openapi.json`` serves it;
``GET /api/docs`` is Swagger UI from the pip-installed swagger-ui-bundle, with no CDN.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import swagger_ui_bundle
from apispec import APISpec
from apispec.yaml_utils import load_yaml_from_docstring
from tornado.web import RequestHandler, StaticFileHandler

from moi.web import anonymous, api, api_accounts, api_bulk, api_ops, metrics

METHODS = ("get", "head", "post", "delete")
_GROUP = re.compile(r"\((?!\?:)([^()]*)\)")  # a capturing group with no group inside
_OPTIONAL = re.compile(r"\(\?:(/\([^()]*\))\)\?")  # (?:/(...))?: a path part that may be left out
ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    "required": ["error", "code"],
}
_DURATION = {  # a time limit or a delay (moi.core.policy.seconds_of)
    "oneOf": [{"type": "number", "exclusiveMinimum": True, "minimum": 0}, {"type": "string", "example": "15m"}],
    "description": "seconds, or text: 90s, 15m, 2h",
}
RESOURCES = {  # what a job asks of a scheduler context's batch scheduler (moi.core.resources)
    "type": "object",
    "properties": {
        "cores": {"type": "integer", "minimum": 1, "description": "cores per task"},
        "nodes": {"type": "integer", "minimum": 1},
        "gpus": {"type": "integer", "minimum": 0},
        "memory": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "example": "128G"}]},
        "walltime": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "example": "12:00:00"}]},
        "partition": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"},
        "account": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"},
    },
    "additionalProperties": False,
    "description": "for a scheduler context only: memory in MiB or as 512M, 128G; walltime in seconds or as 90m, "
    "12h, 12:00:00",
}
NEW_JOB = {  # POST /api/v1/jobs as JSON (moi.web.api JobsHandler.post)
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "params": {"type": "object"},
        "files": {"type": "array", "items": {"type": "string"}, "description": "inputs by URI, as the policy allows"},
        "cmd": {"type": "string"},
        "cmd_type": {"type": "string", "enum": ["python", "system"]},
        "name": {"type": "string"},
        "url": {"type": "string"},
        "priority": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["low", "normal", "high"]}]},
        "email": {"type": "string"},
        "group": {"type": "string", "description": "the id of one of your groups"},
        **{name: _DURATION for name in ("time_limit", "soft_time_limit")},
        "retries": {"type": "integer", "minimum": 0, "description": "more attempts a failure gets ([moi] max_retries)"},
        "retry_on": {
            "type": "array",
            "items": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1, "maximum": 255}]},
            "description": "the failures retried: exception names (OSError, JobTimeLimit, mymodule.Busy), exit codes",
        },
        "backoff": {
            "oneOf": [_DURATION, {"type": "array", "items": _DURATION, "minItems": 2, "maxItems": 2}],
            "description": "the delay before a retry, doubling, with jitter: first, or [first, largest]",
        },
        "idempotent": {"type": "boolean", "description": "after a lost engine, queued again as a new attempt"},
        "resources": RESOURCES,
    },
}
NEW_JOB_FORM = {  # POST /api/v1/jobs as multipart/form-data: NEW_JOB's fields as text, and the input files
    "type": "object",
    "properties": {
        **{name: {"type": "string"} for name in ("service", "name", "url", "priority", "email", "group")},
        "params": {"type": "string", "description": "a JSON object"},
        "time_limit": {"type": "string", "description": "the job's time limit: 90s, 15m, 2h"},
        "soft_time_limit": {"type": "string", "description": "a warning before it: shorter than time_limit"},
        "retries": {"type": "string", "description": "more attempts a failure gets (0 to [moi] max_retries)"},
        "retry_on": {"type": "string", "description": "the failures retried: exception names, exit codes (comma list)"},
        "backoff": {"type": "string", "description": "the delay before a retry, doubling: 2s, or 2s,5m"},
        "idempotent": {"type": "string", "enum": ["true", "false"], "description": "may run again after a lost engine"},
        "resources": {"type": "string", "description": "a JSON object: cores, memory, walltime, ... (schedulers)"},
        "input": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "the input files"},
    },
}
BULK_PREVIEW = {  # POST /api/v1/jobs/bulk/preview (moi.web.api_bulk): an action and the listing's filters
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["cancel", "relaunch", "delete"]},
        **{name: {"type": "string"} for name in ("status", "service", "group", "since", "until", "name", "q", "user")},
        "cursor": {"type": "integer", "minimum": 0, "description": "a preview's next: the jobs after its"},
    },
    "required": ["action"],
}
BULK_IDS = {  # POST /api/v1/jobs/bulk/{action}: the ids a preview answered
    "type": "object",
    "properties": {"ids": {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 1000}},
    "required": ["ids"],
}
ANONYMOUS_JOB = {  # POST /api/v1/anonymous/jobs as JSON (moi.web.anonymous): a service's job, nothing else; no files
    # (they are uploaded, multipart: a path or URI is refused)
    "type": "object",
    "properties": {
        "service": {"type": "string", "description": "a service marked anonymous"},
        "params": {"type": "object"},
        "name": {"type": "string"},
        "email": {"type": "string", "description": "where the link is mailed"},
    },
    "required": ["service"],
}
ANONYMOUS_JOB_FORM = {
    "type": "object",
    "properties": {
        **{name: {"type": "string"} for name in ("service", "name", "email")},
        "params": {"type": "string", "description": "a JSON object"},
        "input": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "the input files"},
    },
    "required": ["service"],
}
_ANSWERS = {"get": "200", "head": "200", "post": "200", "delete": "204"}
_ERRORS = {"400": "bad request", "401": "no or a bad token", "404": "no such job, or not yours", "503": "Redis away"}


def document(routes: list[tuple[str, type[RequestHandler]]]) -> dict[str, Any]:
    spec = APISpec(title="moi", version=_version(), openapi_version="3.0.3")
    spec.components.schema("Error", ERROR)
    spec.components.schema("NewJob", NEW_JOB)
    spec.components.schema("NewJobForm", NEW_JOB_FORM)
    spec.components.schema("BulkPreview", BULK_PREVIEW)
    spec.components.schema("BulkIds", BULK_IDS)
    spec.components.schema("AnonymousJob", ANONYMOUS_JOB)
    spec.components.schema("AnonymousJobForm", ANONYMOUS_JOB_FORM)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for pattern, handler in routes:
        for path, names in _paths(pattern, handler):
            operations = {method: _operation(handler, method, path, names) for method in _methods(handler)}
            spec.path(path=path, operations=operations)
    answer = spec.to_dict()
    answer["security"] = [{"bearer": []}]
    return answer


def _version() -> str:
    try:
        return version("moi")
    except PackageNotFoundError:
        return "0"


def _methods(handler: type[RequestHandler]) -> list[str]:
    return [method for method in METHODS if getattr(handler, method) is not getattr(RequestHandler, method)]


def _paths(pattern: str, handler: type[RequestHandler]) -> Iterator[tuple[str, list[str]]]:
    """The OpenAPI paths of a Tornado pattern, with the names of their parameters."""
    variants = [pattern]
    optional = _OPTIONAL.search(pattern)
    if optional:
        variants = [pattern[: optional.start()] + pattern[optional.end() :], _OPTIONAL.sub(r"\1", pattern)]
    method = getattr(handler, _methods(handler)[0])
    names = [name for name in inspect.signature(method).parameters if name not in ("self", "body")]
    for variant in variants:
        groups = _GROUP.findall(variant)
        words = [group.split("|") if re.fullmatch(r"[a-z|]+", group) else [None] for group in groups]
        for chosen in itertools.product(*words):
            path, used = variant, []
            for index, (group, word) in enumerate(zip(groups, chosen, strict=True)):
                if word is None:  # a parameter: named as the method names it (its index-th argument)
                    used.append(names[index])
                path = path.replace(f"({group})", word if word is not None else "{" + names[index] + "}", 1)
            yield path, used


def _operation(handler: type[RequestHandler], method: str, path: str, names: list[str]) -> dict[str, Any]:
    func = getattr(handler, method)
    doc = inspect.getdoc(func) or inspect.getdoc(handler) or ""
    operation: dict[str, Any] = {
        "summary": doc.split("\n", 1)[0] or f"{method.upper()} {handler.__name__}",
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_"),
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names],
        "responses": {_ANSWERS[method]: {"description": "done"}},
    }
    for status, why in _ERRORS.items():
        operation["responses"][status] = {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    extra = load_yaml_from_docstring(doc) if "---" in doc else {}
    for key, value in (extra or {}).items():
        if key == "responses":
            operation["responses"].update({str(status): answer for status, answer in value.items()})
        elif key == "parameters":  # a docstring's (query, header) come after the route's path parameters
            operation["parameters"] += value
        else:
            operation[key] = value
    return operation


class OpenAPIHandler(RequestHandler):
    """The API's OpenAPI document (no login: it says nothing private)."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        routes = [
            *api_bulk.ROUTES,
            *api.ROUTES,
            *anonymous.API_ROUTES,
            *api_ops.ROUTES,
            *api_accounts.ROUTES,
            *metrics.ROUTES,
        ]
        self.finish(json.dumps(document(routes)))


class DocsHandler(RequestHandler):
    """Swagger UI on the document, from the swagger-ui-bundle package's files."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_PAGE)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>moi API</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script src="/api/docs/static/moi-docs.js"></script>
</body></html>
"""


class DocsStartHandler(RequestHandler):
    """The two lines that point Swagger UI at moi's document: a handler of its own, since a
    StaticFileHandler answering outside its files fails on what it never set (its ``absolute_path``)."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript")
        self.finish('SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#swagger-ui", validatorUrl: null});\n')


def routes() -> list[tuple[str, type[RequestHandler], dict[str, Any]] | tuple[str, type[RequestHandler]]]:
    return [
        (r"/api/v1/openapi\.json", OpenAPIHandler),
        (r"/api/docs", DocsHandler),
        (r"/api/docs/static/moi-docs\.js", DocsStartHandler),
        (r"/api/docs/static/(.*)", StaticFileHandler, {"path": swagger_ui_bundle.swagger_ui_path}),
    ]
