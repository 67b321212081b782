"""The dashboard's pages: my jobs, a job, the submit form and, for admins, operations.

Each page is a small server-rendered shell (Tornado templates escape every value)
that ``static/dashboard.js`` fills: live over the websocket where the jobs are
the user's own, from the HTTP API (``moi.web.api``) otherwise. There is no build step.

    /                the user's jobs: a live, filtered, sortable table
    /jobs/<id>       one job: its fields, result or traceback, log, files, steps, actions
    /submit          a service picked, its parameters and input files filled, submitted
    /ops             admins: every user's jobs, queues, workers, contexts, the last hour
    /list            moi.js's plain live list (the widget an application embeds)

Admins are the users named in ``[moi] admins`` (``MOI_ADMINS``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tornado.web import HTTPError, RequestHandler, authenticated

from moi.core.errors import MoiError
from moi.core.info import is_uuid
from moi.core.keys import user_name_problem
from moi.relay import bearer
from moi.relay.session_check import confirmed
from moi.relay.websocket import cookie_user, hub_for, user_group
from moi.storage.store import Store, store_for


class PageHandler(RequestHandler):
    """A page for a logged-in user with a valid name; it sets the XSRF cookie the page's API calls send back."""

    def get_current_user(self) -> Any:
        return cookie_user(self.get_signed_cookie("user"))

    async def prepare(self) -> None:
        try:  # a cookie whose session was ended is no login: @authenticated sends it to /login
            self.current_user = await confirmed(self, hub_for(self.application), self.current_user)
        except MoiError as error:
            raise HTTPError(503, "job store unavailable") from error
        if self.current_user and user_name_problem(str(self.current_user)) is not None:
            raise HTTPError(403)  # a cookie signed for a refused name gets no page
        self.xsrf_token  # noqa: B018  (read: Tornado sets the _xsrf cookie)

    def page(self, template: str, **values: Any) -> None:
        self.render(template, user=self.current_user, admin=bearer.is_admin_login(self.current_user), **values)

    @property
    def store(self) -> Store:
        hub = hub_for(self.application)
        return store_for(hub.url, hub.keys.prefix, hub.ttl)


class JobsPageHandler(PageHandler):
    @authenticated
    def get(self) -> None:
        self.page("jobs.html", group=self.get_query_argument("group", ""))


class ListPageHandler(PageHandler):
    @authenticated
    def get(self) -> None:
        self.page("index.html")


class SubmitPageHandler(PageHandler):
    @authenticated
    def get(self) -> None:
        self.page("submit.html")


class OpsPageHandler(PageHandler):
    @authenticated
    def get(self) -> None:
        if not bearer.is_admin_login(self.current_user):
            self.set_status(403)  # a page that says what this is and who may see it, not a bare 403
            self.page("not_admin.html")
            return
        self.page("ops.html")


class JobPageHandler(PageHandler):
    @authenticated
    async def get(self, job_id: str) -> None:
        crumbs = await self._crumbs(job_id)
        self.page("job.html", job_id=job_id, crumbs=crumbs, link=None)

    async def _crumbs(self, job_id: str) -> list[tuple[str, str]]:
        """(id, name) of the groups above the job, top first; 404 unless the job is the user's (or an admin's)."""
        if not is_uuid(job_id):
            raise HTTPError(404)
        hub = hub_for(self.application)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, _chain, self.store, job_id, await user_group(hub, str(self.current_user)), self._admin()
            )
        except MoiError as error:
            raise HTTPError(503, "job store unavailable") from error

    def _admin(self) -> bool:
        return bearer.is_admin_login(self.current_user)


def _chain(store: Store, job_id: str, mine: str, admin: bool) -> list[tuple[str, str]]:
    info = store.find(job_id)
    if info is None or info.get("type") != "job" or not isinstance(info.get("parent"), str):
        raise HTTPError(404)
    chain = store.chain_of(info["parent"])
    if mine not in chain and not admin:
        raise HTTPError(404)  # not yours: as if there were no such job
    names = {node["id"]: str(node.get("name", node["id"])) for node in store.get_many(chain)}
    return [(node_id, names.get(node_id, node_id)) for node_id in reversed(chain)]


ROUTES = [
    (r"/", JobsPageHandler),
    (r"/list", ListPageHandler),
    (r"/submit", SubmitPageHandler),
    (r"/ops", OpsPageHandler),
    (r"/jobs/([^/]+)", JobPageHandler),
]
