"""A Tornado application served on a free port of 127.0.0.1 for one test, its Hub closed after."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application

from moi.websocket import HUB_SETTING


@contextlib.asynccontextmanager
async def serving(app: Application) -> AsyncIterator[int]:
    """Serve ``app`` while the block runs; yields its port."""
    sock, port = bind_unused_port()
    http = HTTPServer(app)
    http.add_sockets([sock])
    try:
        yield port
    finally:
        http.stop()
        hub = app.settings.get(HUB_SETTING)
        if hub is not None:
            await asyncio.wait_for(hub.close(), 15)  # a hang here would hang the whole run
