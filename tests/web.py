"""A Tornado application served on a free port of 127.0.0.1 for one test, its Hub closed after."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application

from moi.websocket import HUB_SETTING

T = TypeVar("T")


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


def run_to_end(main: Coroutine[Any, Any, T], leftovers: float = 15.0) -> T:
    """``asyncio.run(main)``, but what is left running at the end fails the test within ``leftovers`` s,
    with the stacks of the tasks and threads that would not stop, instead of hanging the run.

    asyncio.run waits without limit for tasks that ignore their cancellation and for the
    default executor's threads (a thread blocked on a socket keeps it waiting for ever).
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _stop_leftovers(loop, leftovers)
        finally:
            loop.close()


def _stop_leftovers(loop: asyncio.AbstractEventLoop, leftovers: float) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    stuck: set[asyncio.Task[Any]] = set()
    if tasks:
        _, stuck = loop.run_until_complete(asyncio.wait(tasks, timeout=leftovers))
    loop.run_until_complete(loop.shutdown_asyncgens())
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), leftovers))
    except TimeoutError:
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        raise AssertionError("an executor thread would not stop; its stack is on stderr") from None
    if stuck:
        for task in stuck:
            task.print_stack(file=sys.stderr)
        raise AssertionError(f"tasks ignored their cancellation: {sorted(map(repr, stuck))}")
