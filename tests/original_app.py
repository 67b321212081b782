"""A Tornado application written the way applications of the original moi were (its example, and Qiita).

Run as ``python -m tests.original_app --port N`` by the tests. It mounts the unchanged
``MOIMessageHandler``, keeps the user in a cookie set with ``json_encode(user)`` as the
original example did, and serves pages that use only the original page API:
``moi.init`` / ``moi.add_callback`` / ``moi.send`` and ``moi_list.init``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

from tornado.escape import json_encode
from tornado.web import Application, RequestHandler, StaticFileHandler

from moi import moi_js, moi_list_js
from moi.websocket import MOIMessageHandler

COOKIE_SECRET = "original-app-test-secret"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>original</title>
<script src="/static/moi.js"></script>
<script src="/static/moi_list.js"></script>
</head><body><div id="jobs"></div>
<script>moi_list.init({group}, document.getElementById("jobs"));</script>
</body></html>"""

# An original-style page of its own: moi.init with its own callbacks, frames kept in window.seen.
RAW_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="/static/moi.js"></script></head><body>
<script>
window.seen = [];
window.opened = 0;
["add", "get", "update", "remove"].forEach(function (action) {
  moi.add_callback(action, function (info) { window.seen.push([action, info]); });
});
moi.init(null, null, function () { window.opened += 1; moi.send("get", []); });
</script></body></html>"""


class BaseHandler(RequestHandler):
    def get_current_user(self):
        user = self.get_secure_cookie("user")
        return user.decode().strip('" ') if user else None


class LoginHandler(BaseHandler):
    def get(self):
        self.set_secure_cookie("user", json_encode(self.get_argument("user")))
        self.redirect(self.get_argument("next", "/"))


class ListHandler(BaseHandler):
    def get(self, group_id=None):
        self.write(PAGE.replace("{group}", json.dumps(group_id)))


class RawHandler(BaseHandler):
    def get(self):
        self.write(RAW_PAGE)


def make_app() -> Application:
    static = os.path.dirname(moi_js())
    assert os.path.dirname(moi_list_js()) == static
    return Application(
        [
            (r"/", ListHandler),
            (r"/login", LoginHandler),
            (r"/analysis/([0-9a-f-]+)", ListHandler),
            (r"/raw", RawHandler),
            (r"/moi-ws/", MOIMessageHandler),
            (r"/static/(.*)", StaticFileHandler, {"path": static}),
        ],
        cookie_secret=COOKIE_SECRET,
    )


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = make_app().listen(port, address="127.0.0.1")
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
