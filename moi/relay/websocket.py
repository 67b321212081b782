"""The websocket relay: a user's live job tree, from Redis to ``moi.js``.

Mount it in any Tornado application::

    Application([(r"/moi-ws/", MOIMessageHandler), ...], cookie_secret=...)

The user is ``get_current_user()`` (by default the signed cookie ``user``;
override it to use your application's login), mapped to a group through
``user-id-map`` only. Without a user, or with a name ``moi.core.keys.user_name_problem``
refuses (a node id, ``no-user``, a ``moi:`` name), the upgrade is refused with 403:
a login name never reaches another user's tree. Your login should refuse those
names too, with the same function.

Server -> browser, one JSON object per frame: ``{"add"|"update"|"remove"|"get": info}``,
or ``{"error": "what was wrong"}`` for a request the server refuses.
Browser -> server: ``{"get": [ids]}`` (an empty list: the user's own group),
``{"log": id}`` (follow a job's log, see ``moi.jobfiles.log_tail``), ``{"remove": [ids]}``,
``{"cancel": [ids]}`` (a group: all its unfinished jobs; the outcome arrives as updates),
``{"relaunch": [ids]}`` (finished jobs, again: the new jobs arrive as adds),
``{"pause": [ids]}`` and ``{"resume": [ids]}`` (queued jobs, or all of a group's),
``{"close": null}``. A verb ``v`` is handled by the method ``do_v``; a subclass adds
verbs by extending ``VERBS`` and adding the method.

Every socket of a process shares the application's one ``Hub`` (one pub/sub
connection, a few read connections), kept in ``application.settings["moi_hub"]``.

Bounds, each an application setting. Output a client has not read yet: past a
quarter of ``moi_max_unsent_bytes`` (4 MiB) the socket's next request waits (and
its further frames are not read) until the client catches up; a socket that stays
behind for ``moi_unsent_timeout`` seconds (20), or gets past the whole bound, is
closed (1008). A user has at most ``moi_max_sockets_per_user`` (20) sockets per
process; the next upgrade gets 429. Pings every ``websocket_ping_interval``
seconds (30 unless the application sets it) drop half-open connections.

A socket opened with a Bearer token lives no longer than its token: when the token
is revoked (announced on ``moi:tokens:revoked``, which every server's hub hears)
or expires, the socket gets an error frame and is closed (1008), and every frame
it sends is checked against the token first, so a verb sent meanwhile is refused.

Here: the socket's life (its user, its place, its group, its end). Its parts:
``moi.relay.frames`` (a frame read as a request), ``moi.relay.verbs`` (what each verb
does), ``moi.relay.outbound`` (frames out, and the bound on unread output),
``moi.relay.token_watch`` (a token's end ends its socket), ``moi.relay.session_check`` (a login's too).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis
from tornado.web import Application, HTTPError

from moi.core.errors import InvalidUserName, MoiError, RedisRefused, RedisUnavailable
from moi.core.keys import Keys, user_name_problem
from moi.core.redact import printable
from moi.jobs import connections
from moi.relay import bearer
from moi.relay.closing_tasks import in_background
from moi.relay.frames import parse_request
from moi.relay.group import Group
from moi.relay.hub import Hub
from moi.relay.outbound import CLOSE_POLICY
from moi.relay.session_check import SESSION_COOKIE, SESSIONS_SETTING, SessionWatch, confirmed
from moi.relay.token_watch import TokenWatch
from moi.relay.verbs import SocketVerbs
from moi.storage import tokens
from moi.storage.store import store_for

log = logging.getLogger("moi.websocket")

# Frames above this are refused by Tornado itself, which closes the socket (1009).
HARD_FRAME_LIMIT = 1024 * 1024
HUB_SETTING = "moi_hub"
# Open sockets of one user in one process; the next upgrade is refused with 429.
SOCKETS_SETTING = "moi_max_sockets_per_user"
MAX_SOCKETS = 20
PING_INTERVAL = 30.0  # seconds; Tornado's default pong timeout is the interval
_OPEN_SOCKETS = "moi_open_sockets"  # application setting: user -> their open handlers


def hub_for(application: Application) -> Hub:
    """The application's shared Hub, made on first use from moi's settings."""
    hub = application.settings.get(HUB_SETTING)
    if hub is None:
        settings = connections.settings()
        hub = Hub(connections.redis_url(), Keys(settings.key_prefix), settings.ttl)
        application.settings[HUB_SETTING] = hub
    return hub


async def user_group(hub: Hub, user: str) -> str:
    """The id of a user's group (made on first use), as the CLI's ``--user`` would.

    Only through ``user-id-map``: a name that could alias a node (a uuid, a moi key)
    is refused with InvalidUserName, never looked up as an id.
    """
    problem = user_name_problem(user)
    if problem is not None:
        raise InvalidUserName(user, problem)
    try:
        group_id = await hub.redis.hget(hub.keys.user_map, user)
        if group_id is not None and await hub.redis.exists(hub.keys.info(group_id)):
            return str(group_id)
    except redis.ResponseError as error:
        raise RedisRefused(hub.url, error) from None
    except (redis.RedisError, OSError) as error:
        raise RedisUnavailable(hub.url, error) from None
    store = store_for(hub.url, hub.keys.prefix, hub.ttl)
    return await asyncio.get_running_loop().run_in_executor(None, store.ensure_group, user)


def open_sockets(application: Application) -> int:
    """How many sockets this process has open now, every user's."""
    return sum(len(mine) for mine in application.settings.get(_OPEN_SOCKETS, {}).values())


def cookie_user(value: bytes | None) -> str | None:
    """The user a signed ``user`` cookie names: ``alice``, or ``"alice"`` as the original's example stored it.

    The original set ``json_encode(user)`` and stripped the quotes when reading. A name that
    starts with a quote is refused at login (``user_name_problem``), so the two cannot collide.
    """
    if not value:
        return None
    text = value.decode()
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        return decoded if isinstance(decoded, str) else text
    return text


class MOIMessageHandler(SocketVerbs):
    """A socket's life: the upgrade (a user, a place among their sockets), following their group,
    each frame read and answered (``moi.relay.verbs``), and what it holds freed when it ends."""

    _token_watch: TokenWatch | None = None
    _session_watch: SessionWatch | None = None
    _user: str | None = None  # set while this handler holds one of its user's socket places

    @property
    def max_message_size(self) -> int:
        # Up to here a frame is read and answered with an error; beyond, Tornado closes.
        return min(int(self.settings.get("websocket_max_message_size", HARD_FRAME_LIMIT)), HARD_FRAME_LIMIT)

    @property
    def ping_interval(self) -> float | None:
        # Pings by default: a half-open connection (a laptop closed) is dropped, its group with it.
        interval = self.settings.get("websocket_ping_interval", PING_INTERVAL)
        return None if interval is None else float(interval)

    def get_current_user(self) -> Any:
        """The signed cookie ``user``; override with your application's login."""
        return cookie_user(self.get_signed_cookie("user"))

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Checked before the upgrade: no user, no socket. A Bearer token, when given, is the user.
        try:
            self.current_user = await confirmed(self, hub_for(self.application), self.current_user)
        except MoiError:
            raise HTTPError(503, "job store unavailable") from None
        self.token = await bearer.token_of(self, hub_for(self.application))
        if self.token is not None:
            self.current_user = self.token.user
        user = self.current_user
        if not user:
            raise HTTPError(403, "log in first")
        user = str(user)
        problem = user_name_problem(user)
        if problem is not None:
            log.warning("refused a socket: %s", InvalidUserName(user, problem))  # the message shows it escaped
            raise HTTPError(403, "not a user name")
        self.hub = hub_for(self.application)
        self._claim(user)
        try:
            self.group_id = await user_group(self.hub, user)
            await super().get(*args, **kwargs)
        except MoiError as error:
            log.warning("cannot open a socket for %s: %s", printable(user), printable(error))
            raise HTTPError(503, "job store unavailable") from None
        finally:
            if self.ws_connection is None:  # not upgraded (or closed already): the place is free again
                self._release()

    def _claim(self, user: str) -> None:
        """Take one of the user's socket places in this process, or refuse with 429."""
        sockets: dict[str, set[MOIMessageHandler]] = self.application.settings.setdefault(_OPEN_SOCKETS, {})
        mine = sockets.setdefault(user, set())
        limit = int(self.settings.get(SOCKETS_SETTING, MAX_SOCKETS))
        if len(mine) >= limit:
            log.warning("refused a socket for %s: %d open already (at most %d)", printable(user), len(mine), limit)
            raise HTTPError(429, "too many open sockets")
        mine.add(self)
        self._user = user

    def _release(self) -> None:
        user, self._user = self._user, None
        sockets = self.application.settings.get(_OPEN_SOCKETS, {})
        if user is not None and user in sockets:
            sockets[user].discard(self)
            if not sockets[user]:
                del sockets[user]

    async def open(self, *args: str, **kwargs: str) -> None:
        self._count_unsent()
        self.group = Group(self.hub, self.group_id, self.send, self.report)
        try:
            if self.token is not None:
                self._token_watch = TokenWatch(self, self.token)
                await self._token_watch.start()
            elif self.settings.get(SESSIONS_SETTING):
                self._session_watch = SessionWatch(self, (self.get_signed_cookie(SESSION_COOKIE) or b"").decode())
                await self._session_watch.start()
            group = self.group
            if group is None:  # the token or session ran out meanwhile: the socket is closed already
                return
            await group.start()
        except MoiError as error:
            log.warning("cannot follow the jobs of %s: %s", printable(self.current_user), printable(error))
            self.refuse(str(error))
            self.close(1011, "job store unavailable")

    async def on_message(self, message: str | bytes) -> None:
        if self.ws_connection is None or not await self._reader_caught_up():
            return  # closing (for not reading, say): the frames still arriving get no answer
        verb = None
        try:
            if self.token is not None and not await tokens.still_valid(
                self.hub.redis, self.hub.keys, self.hub.url, self.token
            ):
                self.token_gone()
                return
            verb, argument = parse_request(message)
            await self._act(verb, argument)
        except MoiError as error:
            # Escaped: an id or verb holding a newline must not forge a log line.
            log.info("refused %s from %s: %s", printable(verb or "a frame", 40), self._who(), printable(error))
            self.refuse(str(error))
        except asyncio.CancelledError:
            # The server is shutting down under this request; the page re-asks the next server.
            log.debug("%s from %s cut short by shutdown", printable(verb or "a frame", 40), self._who())

    def on_close(self) -> None:
        self._release()
        self._stop_following()
        for watch in (self._token_watch, self._session_watch):
            if watch is not None:
                in_background(watch.stop())
        self._token_watch = self._session_watch = None
        self._stop_logs()

    def _stop_following(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            in_background(group.close())

    def token_gone(self) -> None:
        """The socket's token was revoked or has expired: say so, and close."""
        if self.ws_connection is None:
            return
        log.info("closing a socket of %s: its token %s was revoked or has expired", self._who(), self.token_id)
        self.refuse("your token was revoked or has expired; this socket closes")
        self.shut(CLOSE_POLICY, "token revoked or expired")

    def session_gone(self) -> None:
        """The login this socket was opened with has ended (a logout, ``moi user logout``): say so, and close."""
        if self.ws_connection is None:
            return
        log.info("closing a socket of %s: its login ended", self._who())
        self.refuse("your login has ended; this socket closes")
        self.shut(CLOSE_POLICY, "login ended")

    def shut(self, code: int, reason: str) -> None:
        super().shut(code, reason)
        self._release()  # the place is free now, not when (if ever) the client answers the close
        self._stop_following()

    @property
    def token_id(self) -> str:
        return self.token.id if self.token is not None else "-"
