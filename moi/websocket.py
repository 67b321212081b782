"""The websocket relay: a user's live job tree, from Redis to ``moi.js``.

Mount it in any Tornado application::

    Application([(r"/moi-ws/", MOIMessageHandler), ...], cookie_secret=...)

The user is ``get_current_user()`` (by default the signed cookie ``user``;
override it to use your application's login), mapped to a group through
``user-id-map``. Without a user the upgrade is refused with 403.

Server -> browser, one JSON object per frame: ``{"add"|"update"|"remove"|"get": info}``,
or ``{"error": "what was wrong"}`` for a request the server refuses.
Browser -> server: ``{"get": [ids]}`` (an empty list: the user's own group),
``{"remove": [ids]}``, ``{"cancel": [ids]}`` (a group: all its unfinished
jobs; the outcome arrives as updates), ``{"close": null}``. A verb ``v`` is handled by the
method ``do_v``; a subclass adds verbs by extending ``VERBS`` and adding the
method.

Every socket of a process shares the application's one ``Hub`` (one pub/sub
connection, a few read connections), kept in ``application.settings["moi_hub"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from tornado.web import Application, HTTPError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from . import connections
from .errors import BadRequest, MoiError, NotInGroup
from .group import Group
from .hub import Hub
from .info import Info, Stored
from .job import cancel
from .keys import Keys
from .store import store_for

log = logging.getLogger("moi.websocket")

# A request is a verb and a list of ids; anything near this size is not one.
MAX_FRAME = 64 * 1024
MAX_IDS = 1000
MAX_ID_LENGTH = 200
# Frames above this are refused by Tornado itself, which closes the socket (1009).
HARD_FRAME_LIMIT = 1024 * 1024
HUB_SETTING = "moi_hub"


def hub_for(application: Application) -> Hub:
    """The application's shared Hub, made on first use from moi's settings."""
    hub = application.settings.get(HUB_SETTING)
    if hub is None:
        settings = connections.settings()
        hub = Hub(connections.redis_url(), Keys(settings.key_prefix), settings.ttl)
        application.settings[HUB_SETTING] = hub
    return hub


async def user_group(hub: Hub, user: str) -> str:
    """The id of a user's group (made on first use), as the CLI's ``--user`` would."""
    if await hub.redis.exists(hub.keys.info(user), hub.keys.children(user)):
        # A user name that is a node's id (or another moi key) could reach that node's tree.
        raise NotInGroup(user)
    group_id = await hub.redis.hget(hub.keys.user_map, user)
    if group_id is not None and await hub.redis.exists(hub.keys.info(group_id)):
        return str(group_id)
    store = store_for(hub.url, hub.keys.prefix, hub.ttl)
    return await asyncio.get_running_loop().run_in_executor(None, store.ensure_group, user)


def parse_request(frame: str | bytes) -> tuple[str, Any]:
    """``(verb, argument)`` of a browser frame, or BadRequest saying what is wrong."""
    if isinstance(frame, bytes):
        raise BadRequest("binary frames are not accepted; send JSON text")
    if len(frame) > MAX_FRAME:
        raise BadRequest(f"request too large ({len(frame)} characters; at most {MAX_FRAME})")
    try:
        request = json.loads(frame)
    except ValueError:
        raise BadRequest("request is not JSON") from None
    if not isinstance(request, dict) or len(request) != 1:
        raise BadRequest('a request is a JSON object with one verb, like {"get": [ids]}')
    ((verb, argument),) = request.items()
    return verb, argument


def id_list(argument: Any) -> list[str]:
    """The ids of a get/remove request: a list of strings (or one string, as in the seed)."""
    ids = [argument] if isinstance(argument, str) else argument
    if not isinstance(ids, list) or not all(isinstance(node_id, str) for node_id in ids):
        raise BadRequest("ids must be a list of strings")
    if len(ids) > MAX_IDS:
        raise BadRequest(f"too many ids ({len(ids)}; at most {MAX_IDS})")
    if any(len(node_id) > MAX_ID_LENGTH or not node_id for node_id in ids):
        raise BadRequest("an id is empty or too long")
    return list(dict.fromkeys(ids))


class MOIMessageHandler(WebSocketHandler):
    VERBS = frozenset({"get", "remove", "cancel", "close"})

    hub: Hub
    group_id: str
    group: Group | None = None

    @property
    def max_message_size(self) -> int:
        # Up to here a frame is read and answered with an error; beyond, Tornado closes.
        return min(int(self.settings.get("websocket_max_message_size", HARD_FRAME_LIMIT)), HARD_FRAME_LIMIT)

    def get_current_user(self) -> Any:
        """The signed cookie ``user``; override with your application's login."""
        user = self.get_signed_cookie("user")
        return user.decode() if user else None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Checked before the upgrade: no user, no socket.
        user = self.current_user
        if not user:
            raise HTTPError(403, "log in first")
        self.hub = hub_for(self.application)
        try:
            self.group_id = await user_group(self.hub, str(user))
        except NotInGroup:
            raise HTTPError(403, "not a user name") from None
        except MoiError as error:
            log.warning("cannot open a socket for %s: %s", user, error)
            raise HTTPError(503, "job store unavailable") from None
        await super().get(*args, **kwargs)

    async def open(self, *args: str, **kwargs: str) -> None:
        self.group = Group(self.hub, self.group_id, self.send)
        try:
            await self.group.start()
        except MoiError as error:
            log.warning("cannot follow the jobs of %s: %s", self.current_user, error)
            self.refuse(str(error))
            self.close(1011, "job store unavailable")

    async def on_message(self, message: str | bytes) -> None:
        verb = None
        try:
            verb, argument = parse_request(message)
            if verb not in self.VERBS:
                raise BadRequest(f"unknown verb {str(verb)[:40]!r}; known: {', '.join(sorted(self.VERBS))}")
            await getattr(self, f"do_{verb}")(argument)
        except MoiError as error:
            log.info("refused %s from %s: %s", verb or "a frame", self.current_user, error)
            self.refuse(str(error))
        except asyncio.CancelledError:
            # The server is shutting down under this request; the page re-asks the next server.
            log.debug("%s from %s cut short by shutdown", verb or "a frame", self.current_user)

    def on_close(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            asyncio.get_running_loop().create_task(group.close())

    # verbs -------------------------------------------------------------------

    async def do_get(self, argument: Any) -> None:
        ids = id_list(argument)
        await self._group().get(ids or [self.group_id])

    async def do_remove(self, argument: Any) -> None:
        await self._group().remove(id_list(argument))

    async def do_cancel(self, argument: Any) -> None:
        ids = id_list(argument)
        group = self._group()
        for node_id in ids:
            if node_id not in group:
                raise NotInGroup(node_id)  # only one's own jobs
        store = store_for(self.hub.url, self.hub.keys.prefix, self.hub.ttl)
        loop = asyncio.get_running_loop()
        for node_id in ids:
            report = await loop.run_in_executor(None, cancel, node_id, store)
            if not (report.cancelled or report.requested):
                self.refuse(report.summary(node_id))  # said, not silent: nothing was left to cancel

    async def do_close(self, argument: Any) -> None:
        self.close(1000, "closed on request")

    # sending -----------------------------------------------------------------

    def send(self, action: str, info: Info) -> None:
        """The Group's callback: one frame per change, ``{action: info}``.

        A document as read from Redis goes out as the text it was read as (no
        second encoding: the relay's main cost per update). ``action`` is one
        of the Group's four words, safe inside the quotes.
        """
        body = info.text if isinstance(info, Stored) else json.dumps(info)
        self._write(f'{{"{action}": {body}}}')

    def refuse(self, text: str) -> None:
        self._write(json.dumps({"error": text}))

    def _write(self, frame: str) -> None:
        with contextlib.suppress(WebSocketClosedError):  # the page went away; on_close cleans up
            self.write_message(frame)

    def _group(self) -> Group:
        if self.group is None:
            raise BadRequest("the socket is closing")
        return self.group
