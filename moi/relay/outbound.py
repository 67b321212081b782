"""Frames from the server to the browser, and the bound on output a client has not read.

Server -> browser, one JSON object per frame: ``{"add"|"update"|"remove"|"get": info}``,
or ``{"error": "what was wrong"}`` for a request the server refuses.

Output a client has not read yet is counted: past a quarter of ``moi_max_unsent_bytes``
(4 MiB) the socket's next request waits (and its further frames are not read) until the
client catches up; a socket that stays behind for ``moi_unsent_timeout`` seconds (20),
or gets past the whole bound, is closed (1008).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from moi.core.errors import MoiError
from moi.core.info import Info, Stored
from moi.core.redact import printable
from moi.relay.hub import Hub

log = logging.getLogger("moi.websocket")

# Output a client has not read yet (bytes of frames still being written) before its socket is closed.
UNSENT_SETTING = "moi_max_unsent_bytes"
MAX_UNSENT = 4 * 1024 * 1024
# Policy violation: the client sends requests but does not read the answers, or its token was revoked or expired
# (the close reason tells which).
CLOSE_POLICY = 1008
# How long a request waits for its client to read the answers to the last ones.
UNSENT_TIMEOUT_SETTING = "moi_unsent_timeout"
UNSENT_TIMEOUT = 20.0


class SocketOutput(WebSocketHandler):
    """A websocket's writing side: frames out, counted until the client has read them."""

    hub: Hub
    _unsent = 0  # bytes written to the socket's stream and not yet flushed to the client
    _caught_up: asyncio.Event | None = None  # set while _unsent is under the mark where requests wait

    @property
    def max_unsent(self) -> int:
        return int(self.settings.get(UNSENT_SETTING, MAX_UNSENT))

    @property
    def waiting_mark(self) -> int:
        # Requests wait above this: one more answer cannot take a reading client past the bound.
        return self.max_unsent // 4

    def _count_unsent(self) -> None:
        """Start counting output once the socket is open (its requests wait while the client is behind)."""
        self._caught_up = asyncio.Event()
        self._caught_up.set()

    def shut(self, code: int, reason: str) -> None:
        """Close from the server's side. The client's answer (and with it ``on_close``) may never come,
        so a subclass frees here what the socket holds."""
        self.close(code, reason)

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

    def _overflow(self, how: str) -> None:
        log.warning(
            "closing the socket of %s: %d bytes unread (%s past %d); it sends requests but does not read answers",
            self._who(),
            self._unsent,
            how,
            self.waiting_mark if how != "at once" else self.max_unsent,
        )
        self.shut(CLOSE_POLICY, "too much unread output")

    def _who(self) -> str:
        return printable(self.current_user, 80)
