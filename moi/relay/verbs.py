"""What a browser may ask of its socket: one verb per frame, each on the user's own tree.

``{"get": [ids]}`` (an empty list: the user's own group), ``{"log": id}`` (follow a
job's log, see ``moi.jobfiles.log_tail``), ``{"remove": [ids]}``, ``{"cancel": [ids]}``
(a group: all its unfinished jobs; the outcome arrives as updates), ``{"relaunch": [ids]}``
(finished jobs, again: the new jobs arrive as adds), ``{"pause": [ids]}`` and
``{"resume": [ids]}`` (queued jobs, or all of a group's), ``{"close": null}``. A verb
``v`` is handled by the method ``do_v``; a subclass adds verbs by extending ``VERBS``
and adding the method.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

from moi.core.errors import BadRequest, CodeRefused, NotInGroup, WrongState
from moi.jobfiles import log_tail
from moi.jobs import grant, job_files
from moi.jobs.cancel import cancel
from moi.jobs.submit import relaunch
from moi.queue import pause as pausing
from moi.queue.pause import Scope
from moi.relay import bearer
from moi.relay.frames import id_list
from moi.relay.group import Group
from moi.relay.outbound import SocketOutput
from moi.storage import tokens
from moi.storage.store import Store, store_for


class SocketVerbs(SocketOutput):
    """The verbs of a socket that follows a user's group; answers and changes go out as frames."""

    VERBS = frozenset({"get", "remove", "cancel", "relaunch", "pause", "resume", "close", "log"})

    group_id: str
    group: Group | None = None
    token: tokens.Token | None = None  # the Bearer token the socket was opened with; it ends the socket

    async def _act(self, verb: str, argument: Any) -> None:
        """Answer one request by its verb's method; BadRequest for a verb this socket does not know."""
        if verb not in self.VERBS:
            raise BadRequest(f"unknown verb {str(verb)[:40]!r}; known: {', '.join(sorted(self.VERBS))}")
        await getattr(self, f"do_{verb}")(argument)

    async def do_get(self, argument: Any) -> None:
        ids = id_list(argument)
        await self._group().get(ids or [self.group_id])

    async def do_remove(self, argument: Any) -> None:
        await self._group().remove(id_list(argument))

    async def do_cancel(self, argument: Any) -> None:
        ids, store = self._own(argument), self._store()
        loop = asyncio.get_running_loop()
        for node_id in ids:
            report = await loop.run_in_executor(None, cancel, node_id, store)
            if not (report.cancelled or report.requested):
                self.refuse(report.summary(node_id))  # said, not silent: nothing was left to cancel

    async def do_relaunch(self, argument: Any) -> None:
        """Each finished job again, as a new job beside it; the new ones arrive as ``add`` frames."""
        ids, store = self._own(argument), self._store()
        loop = asyncio.get_running_loop()
        token = self.token
        admin = token.admin if token is not None else bearer.is_admin_login(self.current_user)
        code = grant.granted(str(self.current_user), admin, token is not None and token.code)  # see check_relaunch
        for node_id in ids:
            try:
                await loop.run_in_executor(None, relaunch, node_id, store, code)
            except (WrongState, CodeRefused) as error:
                self.refuse(str(error))

    async def do_pause(self, argument: Any) -> None:
        await self._pausing(argument, pausing.pause)

    async def do_resume(self, argument: Any) -> None:
        await self._pausing(argument, pausing.resume)

    async def _pausing(self, argument: Any, action: Callable[[Store, Scope], list[str]]) -> None:
        """Pause or resume jobs and groups of the user's tree; the changes arrive as updates."""
        ids, store = self._own(argument), self._store()
        loop = asyncio.get_running_loop()
        for node_id in ids:
            kind = "group" if self._group().kind_of(node_id) == "group" else "job"
            await loop.run_in_executor(None, action, store, Scope(kind, node_id))

    async def do_log(self, argument: Any) -> None:
        """Follow (or stop following) a job's ``framework.log``; see ``moi.jobfiles.log_tail``."""
        job_id, stop = (
            (argument.get("id"), bool(argument.get("stop"))) if isinstance(argument, dict) else (argument, False)
        )
        (job_id,) = self._own([job_id])
        tails = self.__dict__.setdefault("_tails", {})
        if stop:
            if job_id in tails:
                tails.pop(job_id).cancel()
            return
        if job_id in tails:
            return
        if len(tails) >= log_tail.MAX_PER_SOCKET:
            raise BadRequest(f"at most {log_tail.MAX_PER_SOCKET} logs are followed at once; stop one first")
        # here or on a cluster: read there on the bounded pool of remote file work, not the loop's executor
        work = functools.partial(job_files.work_for, job_id)
        following = log_tail.follow(job_id, self._store(), self._send_log, opener=job_files.open, work=work)
        task = asyncio.get_running_loop().create_task(following)
        tails[job_id] = task
        task.add_done_callback(lambda _: tails.pop(job_id, None))

    def _send_log(self, lines: dict[str, Any]) -> None:
        self._write(json.dumps({"log": lines}))

    def _stop_logs(self) -> None:
        """Stop following every log this socket follows (it is closing)."""
        for task in list(self.__dict__.get("_tails", {}).values()):
            task.cancel()

    async def do_close(self, argument: Any) -> None:
        self.close(1000, "closed on request")

    def _own(self, argument: Any) -> list[str]:
        """The ids of a request, each in the user's own tree (NotInGroup otherwise)."""
        ids = id_list(argument)
        group = self._group()
        for node_id in ids:
            if node_id not in group:
                raise NotInGroup(node_id)
        return ids

    def _store(self) -> Store:
        return store_for(self.hub.url, self.hub.keys.prefix, self.hub.ttl)

    def _group(self) -> Group:
        if self.group is None:
            raise BadRequest("the socket is closing")
        return self.group
