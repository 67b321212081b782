"""The HTTP API's routes for a user's own work, JSON: submit, read and act on jobs, as the websocket does;
a job's files and log, a group's subtree, the services one may submit to. (The operations page's routes
are ``moi.web.api_ops``.)

Who may ask and how errors are answered (the statuses and their codes): ``moi.web.api_handler``; how a
submission's body is read (JSON, or a multipart form with input files): ``moi.web.api_submission``.

    POST   /api/v1/jobs                 {"cmd", "cmd_type"} or {"service", "params"}; name, url, priority, email, group;
                                        time_limit, soft_time_limit, retries, retry_on, backoff, idempotent;
                                        resources (cores, memory, walltime, ...: for a scheduler context);
                                        or multipart/form-data: those as fields (params as JSON), input files as files
    GET    /api/v1/jobs                 ?status=&service=&group=&since=&until=&q=&user=&limit=&cursor=
    POST   /api/v1/jobs/bulk/preview    the ids a bulk action would touch (see moi.web.api_bulk); then
    POST   /api/v1/jobs/bulk/{action}   cancel, relaunch or delete those ids
    GET    /api/v1/jobs/{id}
    DELETE /api/v1/jobs/{id}            the job (cancelled first) and its files
    POST   /api/v1/jobs/{id}/cancel     also relaunch, pause, resume
    GET    /api/v1/jobs/{id}/files[/{path}]  as /moi-files/ (listing, downloads, Range, the owner rule)
    GET    /api/v1/jobs/{id}/log        the job's framework.log
    GET    /api/v1/groups/{id}          a group of yours and every node under it
    GET    /api/v1/services             each service with its parameter schema and steps
    GET    /api/v1/served?path=         whether this server serves a path (a job's result link), {"served": bool}
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from tornado.httputil import HTTPInputError, HTTPServerRequest
from tornado.web import Application

from moi import services
from moi.compute.text_jobs import check_code
from moi.core import resources, values
from moi.core.errors import MoiError
from moi.core.info import Info, has_children, is_finished, is_uuid
from moi.core.policy import Policy
from moi.core.redact import printable
from moi.jobfiles import removal
from moi.jobfiles.input_policy import WEB
from moi.jobfiles.log_tail import LOG_NAME
from moi.jobs import connections, grant, job_policy
from moi.jobs import submit as jobs
from moi.jobs.cancel import cancel
from moi.jobs.submit import submit_code
from moi.queue import listing
from moi.relay.node_removal import remove_nodes
from moi.relay.websocket import hub_for
from moi.storage.store import Store
from moi.web import job_search
from moi.web.api_handler import PREFIX, APIHandler, Problem, is_form, problem_of
from moi.web.api_submission import asked_policy, asked_resources, json_files, submitted, text_field
from moi.web.file_routes import MOIFilesHandler

log = logging.getLogger("moi.api")


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
          - {name: q, in: query, schema: {type: string}, description: "name, user, service, status, id start"}
          - {name: name, in: query, schema: {type: string}, description: "a part of the job's name"}
          - {name: user, in: query, schema: {type: string}, description: "one user's jobs (admins)"}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000, default: 50}}
          - {name: cursor, in: query, schema: {type: integer, minimum: 0}, description: the last page's "next"}
        """
        limit = self._number("limit", 50, 1, listing.MAX_LIMIT)
        cursor = self._number("cursor", None, 0, 2**62)
        search = await job_search.search_of(self, lambda name: self.get_query_argument(name, None))
        found, after = await self.run(job_search.page, self.store, search, limit, cursor)
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
              schema: {$ref: "#/components/schemas/NewJobForm"}
        responses:
          201: {description: "the new job: {id, group}"}
          403: {description: code from a user without the grant}
          409: {description: the job cannot be taken now}
          413: {description: the body or an upload is too large}
          422: {description: a bad parameter or input}
          429: {description: your hard limit of unfinished jobs}
        """
        given = submitted(self.request, self.json_limit())
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
        files = given.get("files") if is_form(self.request) else json_files(given.get("files"))
        if not isinstance(params, dict) or not isinstance(given["service"], str):
            raise Problem(422, "invalid", '"service" is a name and "params" an object')
        job_id, group_id, _ = await self.run(
            services.submit,
            given["service"],
            str(self.current_user),
            params,
            files=files or None,
            email=text_field(given, "email"),
            group=group,
            url=text_field(given, "url"),
            priority=self.asked_priority(given),
            job_name=text_field(given, "name"),
            origin=WEB,  # a web user's inputs: uploads, URIs the policy allows, paths only inside input roots
            resources=asked_resources(given),
            **asdict(asked_policy(given, is_form(self.request))),  # nothing a web user names is imported
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
        policy, asked = asked_policy(given, is_form(self.request)), asked_resources(given)
        await self.run(_checked_policy, policy, asked)  # before a uid is placed
        place = await self.run(grant.placement, self.store, str(self.current_user))
        name = text_field(given, "name") or "api job"
        level = self.asked_priority(given)
        url = text_field(given, "url")
        return await self.run(submit_code, group, name, url, kind, cmd, place, level, policy, asked)


def _checked_policy(policy: Policy, asked: resources.Resources) -> None:
    """InvalidValue for a command job's time limit, retries or resources its (default) context refuses."""
    default = connections.settings().default_context
    job_policy.policy_fields(policy, default, WEB)
    job_policy.resource_fields(connections.context_spec(default), asked)


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
        await self.run(removal.remove_directories, [job_id], {job_id: info})
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


class ServedHandler(APIHandler):
    MOST = 2048  # characters of a path asked about

    async def get(self) -> None:
        """Whether this server has a route for a path on it: the pages link a job's result (``url/ID``) only then.
        ---
        parameters:
          - {name: path, in: query, required: true, schema: {type: string}, description: "a path on this server, /..."}
        responses:
          200: {description: '{"path": ..., "served": true or false}'}
        """
        path = self.get_query_argument("path", "")
        if not path.startswith("/") or path.startswith("//") or len(path) > self.MOST or "\\" in path:
            raise Problem(400, "bad_request", f"path is a path on this server, /..., at most {self.MOST} characters")
        self.answer({"path": path, "served": is_served(self.application, path)})


def is_served(app: Application, path: str) -> bool:
    """Whether a route of ``app`` other than the not-found answer takes a GET of ``path`` (its handler may still
    answer 404 for an id it does not know: a route is what can be told without asking it)."""
    try:  # the path part only: a query is no part of a route, and parsing one may raise (too many fields)
        request = HTTPServerRequest(method="GET", uri=path.split("?", 1)[0].split("#", 1)[0])
        return app.default_router.find_handler(request) is not None
    except (HTTPInputError, ValueError) as error:
        raise Problem(400, "bad_request", f"path is not a path: {printable(error, 80)}") from error


class ServicesHandler(APIHandler):
    async def get(self) -> None:
        known = await self.run(services.known, self.store)
        self.answer({"services": [cls.describe() for cls in known.values()]})


class GroupHandler(APIHandler):
    async def get(self, group_id: str) -> None:
        mine = await self.my_group()
        if not is_uuid(group_id) or (not self.admin and mine not in await self.run(self.store.chain_of, group_id)):
            raise Problem(404, "not_found", f"Unknown group id: {group_id[:80]}")
        nodes = await self.run(_subtree, self.store, group_id)
        if not nodes or nodes[0].get("type") != "group":
            raise Problem(404, "not_found", f"Unknown group id: {group_id}")
        self.answer({"group": nodes[0], "nodes": nodes[1:]})


def _subtree(store: Store, group_id: str) -> list[Info]:
    """The group, then every node under it, parents before children (a job with steps has children too)."""
    found = store.get_many([group_id])
    pending = list(found)
    while pending:
        current = pending.pop(0)
        if has_children(current):
            children = store.get_many(sorted(store.children(current["id"])))
            found += children
            pending += children
    return found


class JobFilesHandler(MOIFilesHandler):
    """``/api/v1/jobs/{id}/files[/{path}]``: the job-files routes under the API's prefix."""

    async def get(self, job_id: str, path: str | None = None, body: bool = True) -> None:
        """A listing of the job's files (a path ending in /, or none), or one file, whole or one Range.
        ---
        parameters:
          - {name: Range, in: header, schema: {type: string}, description: "one range: bytes=START-END"}
          - {name: recursive, in: query, schema: {type: string, enum: ["0", "1"]}}
          - {name: download, in: query, schema: {type: string, enum: ["1"]}}
        responses:
          206: {description: the range asked for}
          410: {description: the job's files were removed by retention}
          416: {description: a Range that is not one range within the file}
        """
        await super().get(job_id, path or "", body)


class JobLogHandler(MOIFilesHandler):
    async def head(self, job_id: str) -> None:  # type: ignore[override]  # the route names no path: the log's is fixed
        """The log's size and type, as GET answers them, without its body."""
        await self.get(job_id, body=False)

    async def get(self, job_id: str, body: bool = True) -> None:  # type: ignore[override]
        """The job's framework.log, whole or one Range.
        ---
        parameters:
          - {name: Range, in: header, schema: {type: string}, description: "one range: bytes=START-END"}
        """
        await super().get(job_id, LOG_NAME, body)


ROUTES = [
    (rf"{PREFIX}/services", ServicesHandler),
    (rf"{PREFIX}/served", ServedHandler),
    (rf"{PREFIX}/groups/([^/]+)", GroupHandler),
    (rf"{PREFIX}/jobs", JobsHandler),
    (rf"{PREFIX}/jobs/([^/]+)", JobHandler),
    (rf"{PREFIX}/jobs/([^/]+)/files(?:/(.*))?", JobFilesHandler),
    (rf"{PREFIX}/jobs/([^/]+)/log", JobLogHandler),
    (rf"{PREFIX}/jobs/([^/]+)/(cancel|relaunch|pause|resume)", JobActionHandler),
]
