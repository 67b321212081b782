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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import redis
from tornado.web import Application, HTTPError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from moi.core import values
from moi.core.errors import (
    BadRequest,
    CodeRefused,
    InvalidUserName,
    InvalidValue,
    MoiError,
    NotInGroup,
    RedisRefused,
    RedisUnavailable,
    WrongState,
)
from moi.core.info import Info, Stored
from moi.core.keys import Keys, user_name_problem
from moi.core.redact import printable
from moi.jobfiles import log_tail
from moi.jobs import connections, grant
from moi.jobs.cancel import cancel
from moi.jobs.submit import relaunch
from moi.queue import pause as pausing
from moi.queue.pause import Scope
from moi.relay import bearer
from moi.relay.group import Group
from moi.relay.hub import Hub
from moi.storage import tokens
from moi.storage.store import Store, store_for

log = logging.getLogger("moi.websocket")

# A request is a verb and a list of ids; anything near this size is not one.
MAX_FRAME = 64 * 1024
MAX_IDS = 1000
MAX_ID_LENGTH = 200
# Frames above this are refused by Tornado itself, which closes the socket (1009).
HARD_FRAME_LIMIT = 1024 * 1024
HUB_SETTING = "moi_hub"
# Output a client has not read yet (bytes of frames still being written) before its socket is closed.
UNSENT_SETTING = "moi_max_unsent_bytes"
MAX_UNSENT = 4 * 1024 * 1024
# Policy violation: the client sends requests but does not read the answers, or its token was revoked or expired
# (the close reason tells which).
CLOSE_POLICY = 1008
# How long a request waits for its client to read the answers to the last ones.
UNSENT_TIMEOUT_SETTING = "moi_unsent_timeout"
UNSENT_TIMEOUT = 20.0
# Open sockets of one user in one process; the next upgrade is refused with 429.
SOCKETS_SETTING = "moi_max_sockets_per_user"
MAX_SOCKETS = 20
PING_INTERVAL = 30.0  # seconds; Tornado's default pong timeout is the interval
_OPEN_SOCKETS = "moi_open_sockets"  # application setting: user -> their open handlers
_CLOSING: set[asyncio.Task[None]] = set()  # groups of closed sockets, still unsubscribing


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


def parse_request(frame: str | bytes) -> tuple[str, Any]:
    """``(verb, argument)`` of a browser frame, or BadRequest saying what is wrong."""
    if isinstance(frame, bytes):
        raise BadRequest("binary frames are not accepted; send JSON text")
    if len(frame) > MAX_FRAME:
        raise BadRequest(f"request too large ({len(frame)} characters; at most {MAX_FRAME})")
    try:
        request = values.loads(frame)
        values.check(request, "")  # what Redis's Lua and JSON cannot hold goes no further (moi.core.values)
    except InvalidValue as error:
        raise BadRequest(str(error)) from None
    except ValueError:
        raise BadRequest("request is not JSON") from None
    except RecursionError:  # "[" * 1000: nested past the parser's depth
        raise BadRequest("request is nested too deeply") from None
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
    VERBS = frozenset({"get", "remove", "cancel", "relaunch", "pause", "resume", "close", "log"})

    hub: Hub
    group_id: str
    group: Group | None = None
    token: tokens.Token | None = None  # the Bearer token the socket was opened with; it ends the socket
    _token_watch: TokenWatch | None = None
    _user: str | None = None  # set while this handler holds one of its user's socket places
    _unsent = 0  # bytes written to the socket's stream and not yet flushed to the client
    _caught_up: asyncio.Event | None = None  # set while _unsent is under the mark where requests wait

    @property
    def max_message_size(self) -> int:
        # Up to here a frame is read and answered with an error; beyond, Tornado closes.
        return min(int(self.settings.get("websocket_max_message_size", HARD_FRAME_LIMIT)), HARD_FRAME_LIMIT)

    @property
    def ping_interval(self) -> float | None:
        # Pings by default: a half-open connection (a laptop closed) is dropped, its group with it.
        interval = self.settings.get("websocket_ping_interval", PING_INTERVAL)
        return None if interval is None else float(interval)

    @property
    def max_unsent(self) -> int:
        return int(self.settings.get(UNSENT_SETTING, MAX_UNSENT))

    @property
    def waiting_mark(self) -> int:
        # Requests wait above this: one more answer cannot take a reading client past the bound.
        return self.max_unsent // 4

    def get_current_user(self) -> Any:
        """The signed cookie ``user``; override with your application's login."""
        return cookie_user(self.get_signed_cookie("user"))

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Checked before the upgrade: no user, no socket. A Bearer token, when given, is the user.
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
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self.group = Group(self.hub, self.group_id, self.send, self.report)
        try:
            if self.token is not None:
                self._token_watch = TokenWatch(self, self.token)
                await self._token_watch.start()
            group = self.group
            if group is None:  # the token ran out meanwhile: the socket is closed already
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
            if verb not in self.VERBS:
                raise BadRequest(f"unknown verb {str(verb)[:40]!r}; known: {', '.join(sorted(self.VERBS))}")
            await getattr(self, f"do_{verb}")(argument)
        except MoiError as error:
            # Escaped: an id or verb holding a newline must not forge a log line.
            log.info("refused %s from %s: %s", printable(verb or "a frame", 40), self._who(), printable(error))
            self.refuse(str(error))
        except asyncio.CancelledError:
            # The server is shutting down under this request; the page re-asks the next server.
            log.debug("%s from %s cut short by shutdown", printable(verb or "a frame", 40), self._who())

    async def _reader_caught_up(self) -> bool:
        """Wait while the client has not read the answers to its last requests; False if it never does.

        Tornado reads no further frame meanwhile, so a client that only sends is held back by TCP.
        """
        if self._caught_up is None or self._caught_up.is_set():
            return True
        timeout = float(self.settings.get(UNSENT_TIMEOUT_SETTING, UNSENT_TIMEOUT))
        try:
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        except TimeoutError:
            self._overflow(f"for {timeout:g} s")
            return False
        return self.ws_connection is not None

    def on_close(self) -> None:
        self._release()
        self._stop_following()
        if self._token_watch is not None:
            watch, self._token_watch = self._token_watch, None
            _in_background(watch.stop())
        for task in list(self.__dict__.get("_tails", {}).values()):
            task.cancel()

    def _stop_following(self) -> None:
        if self.group is not None:
            group, self.group = self.group, None
            _in_background(group.close())

    def token_gone(self) -> None:
        """The socket's token was revoked or has expired: say so, and close."""
        if self.ws_connection is None:
            return
        log.info("closing a socket of %s: its token %s was revoked or has expired", self._who(), self.token_id)
        self.refuse("your token was revoked or has expired; this socket closes")
        self.close(CLOSE_POLICY, "token revoked or expired")
        self._release()
        self._stop_following()

    @property
    def token_id(self) -> str:
        return self.token.id if self.token is not None else "-"

    def _who(self) -> str:
        return printable(self.current_user, 80)

    # verbs -------------------------------------------------------------------

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
        task = asyncio.get_running_loop().create_task(log_tail.follow(job_id, self._store(), self._send_log))
        tails[job_id] = task
        task.add_done_callback(lambda _: tails.pop(job_id, None))

    def _send_log(self, lines: dict[str, Any]) -> None:
        self._write(json.dumps({"log": lines}))

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

    def report(self, problem: MoiError) -> None:
        """The Group's report of a node it skipped (a bad document in Redis): an error frame naming it."""
        self.refuse(str(problem))

    def _write(self, frame: str) -> None:
        """Send a frame, counting it as unsent until written; close a socket whose client stopped reading."""
        if self.ws_connection is None:
            return  # closing; on_close cleans up
        data = frame.encode()  # Tornado would encode it anyway; bytes make the count exact
        try:
            written = self.write_message(data)
        except WebSocketClosedError:  # the page went away; on_close cleans up
            return
        self._unsent += len(data)
        self.hub.frames_sent += 1
        written.add_done_callback(functools.partial(self._written, len(data)))
        if self._unsent > self.waiting_mark and self._caught_up is not None:
            self._caught_up.clear()
        if self._unsent > self.max_unsent:
            self._overflow("at once")

    def _written(self, size: int, written: asyncio.Future[None]) -> None:
        self._unsent -= size
        if self._unsent <= self.waiting_mark and self._caught_up is not None:
            self._caught_up.set()
        if not written.cancelled():
            written.exception()  # retrieved: a socket closed under a write is expected, not an error to log

    def _overflow(self, how: str) -> None:
        log.warning(
            "closing the socket of %s: %d bytes unread (%s past %d); it sends requests but does not read answers",
            self._who(),
            self._unsent,
            how,
            self.waiting_mark if how != "at once" else self.max_unsent,
        )
        self.close(CLOSE_POLICY, "too much unread output")
        self._release()
        self._stop_following()

    def _group(self) -> Group:
        if self.group is None:
            raise BadRequest("the socket is closing")
        return self.group


class TokenWatch:
    """Ends a socket opened with a token when the token is revoked (heard on ``moi:tokens:revoked``,
    from any server) or expires (a timer). When the hub lost messages it asks Redis again."""

    def __init__(self, socket: MOIMessageHandler, token: tokens.Token) -> None:
        self.socket, self.token = socket, token
        self.channel = socket.hub.keys.tokens_revoked
        self._expiry: asyncio.TimerHandle | None = None
        self._stopped = False

    async def start(self) -> None:
        self._arm()
        try:
            await self.socket.hub.subscribe([self.channel], self)
        except (TimeoutError, redis.RedisError, OSError) as error:
            raise RedisUnavailable(self.socket.hub.url, error) from None
        if self._stopped:  # the socket closed while the subscription was on its way: take it back
            await self.stop()
            return
        # A revocation published between the socket's token lookup and this subscription reached no one: ask once.
        await self._check()

    async def stop(self) -> None:
        self._stopped = True
        if self._expiry is not None:
            self._expiry.cancel()
        with contextlib.suppress(TimeoutError, redis.RedisError, OSError):
            await self.socket.hub.unsubscribe([self.channel], self)

    def _arm(self) -> None:
        """Close at the token's expiry (a far one is looked at again every MAX_TIMER seconds)."""
        if self.token.expires is None:
            return
        if self.token.expired():
            self.socket.token_gone()
            return
        delay = min(self.token.expires - time.time(), MAX_TIMER)
        self._expiry = asyncio.get_running_loop().call_later(delay, self._arm)

    def message(self, channel: str, payload: dict[str, Any]) -> None:
        revoked = payload.get("revoked")
        if isinstance(revoked, list) and self.token.id in revoked:
            self.socket.token_gone()

    def resync(self) -> None:
        _in_background(self._check())

    async def _check(self) -> None:
        hub = self.socket.hub
        with contextlib.suppress(MoiError):  # Redis away again: the next resync, or the next frame, checks
            if not await tokens.still_valid(hub.redis, hub.keys, hub.url, self.token):
                self.socket.token_gone()


MAX_TIMER = 7 * 86400.0  # seconds: the longest single timer for an expiry


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _CLOSING.add(task)  # held: the loop keeps only a weak reference to a task
    task.add_done_callback(_CLOSING.discard)
