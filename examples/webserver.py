"""The seed's ``Handler`` example as a runnable Tornado application.

    python examples/webserver.py [--port 8889]

Open http://127.0.0.1:8889/, log in with any name, and press "Say hello": the
job reports its progress with ``status_update``, the list shows it live, and
the finished job links to /hello_result/<id>, which shows its result.

What an existing application adds to use moi is marked "moi:" below. One of
those is the login-name rule: a name that could alias another user's group (a
job or group id, ``no-user``, a ``moi:`` name) is refused at login, and a page
refuses a cookie that holds one (``moi.websocket.user_name_problem``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from tornado.template import DictLoader
from tornado.web import Application, HTTPError, RequestHandler, StaticFileHandler, authenticated

from moi import ctx_default, settings
from moi.errors import UnknownId
from moi.group import get_id_from_user
from moi.job import get_info, submit
from moi.server import STATIC_PATH, cookie_secret
from moi.websocket import MOIMessageHandler, user_name_problem


def hello(**kwargs: Any) -> str:
    import time  # runs on an engine: import there

    for step in range(1, 5):
        kwargs["status_update"](f"saying hello: step {step} of 4")
        time.sleep(0.5)
    return "hi!"


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>moi example</title>
<link rel="stylesheet" href="/moi/moi.css"></head>
<body><main class="moi-page">{% block body %}{% end %}</main></body></html>"""

TEMPLATES = {
    "page.html": PAGE,
    "login.html": """{% extends "page.html" %}{% block body %}
{% if error %}<p id="login-error" role="alert">{{ error }}</p>{% end %}
<form method="post">{% module xsrf_form_html() %}
  <label>Name <input name="user" required></label> <button>Log in</button>
</form>{% end %}""",
    "main.html": """{% extends "page.html" %}{% block body %}
<h1>Hello jobs of {{ current_user }}</h1>
<button id="hello" type="button">Say hello</button>
<div id="jobs"></div>
<script src="/moi/moi.js"></script>
<script>
  // moi: the live list; renderRow is the hook that changes how a row looks.
  moi.liveList(document.getElementById("jobs"), {
    renderRow: function (info, row, helpers) {
      moi.defaultRenderRow(info, row, helpers);
      var link = row.querySelector("a.moi-result");
      if (link) { link.textContent = "see the result"; }
    }
  });
  document.getElementById("hello").addEventListener("click", function () {
    fetch("/hello", {method: "POST", headers: {"X-XSRFToken": {% raw json_encode(handler.xsrf_token.decode()) %}}});
  });
</script>{% end %}""",
    "result.html": """{% extends "page.html" %}{% block body %}
<h1>{{ info["name"] }}</h1>
<p>Status: {{ info["status"] }}</p>
<p>Result: <output id="result">{{ json_encode(info.get("result")) }}</output></p>
<a href="/">back</a>{% end %}""",
}


class BaseHandler(RequestHandler):
    def get_current_user(self) -> Any:
        # Your application's login; moi's websocket handler reads the same cookie.
        user = self.get_signed_cookie("user")
        return user.decode() if user else None


class UserPage(BaseHandler):
    def prepare(self) -> None:
        # moi: a user name that could alias someone else's group never reaches moi (a forged or old cookie).
        if self.current_user is not None and user_name_problem(self.current_user) is not None:
            raise HTTPError(403)


class LoginHandler(BaseHandler):
    def get(self) -> None:
        self.render("login.html", error=None)

    def post(self) -> None:
        user = self.get_body_argument("user", "").strip()
        problem = user_name_problem(user)  # moi: refuse names that could alias another user's group
        if problem is not None:
            self.set_status(400)
            self.render("login.html", error=f"That user name is refused: {problem}.")
            return
        self.set_signed_cookie("user", user, httponly=True, samesite="Lax")
        self.redirect("/")


class MainHandler(UserPage):
    @authenticated
    def get(self) -> None:
        self.render("main.html")


class HelloHandler(UserPage):
    @authenticated
    async def post(self) -> None:
        # The seed's example: a job under the current user, its result page at /hello_result/<id>.
        loop = asyncio.get_running_loop()
        job_id, _, _ = await loop.run_in_executor(
            None, submit, ctx_default, self.current_user, "The hello job", "/hello_result", hello
        )
        self.finish({"id": job_id})


class ResultHandler(UserPage):
    @authenticated
    def get(self, job_id: str) -> None:
        try:
            info = get_info(job_id)
        except UnknownId:
            raise HTTPError(404) from None
        if not owned_by(info, self.current_user):
            raise HTTPError(404)
        self.render("result.html", info=info)


def owned_by(info: dict[str, Any], user: str) -> bool:
    """A job is the user's when their group is among its ancestors."""
    group_id = get_id_from_user(user)
    parent = info.get("parent")
    for _ in range(32):  # nesting is shallow; a bound keeps a bad tree from looping
        if parent is None:
            return False
        if parent == group_id:
            return True
        try:
            parent = get_info(parent).get("parent")
        except UnknownId:
            return False
    return False


def make_app() -> Application:
    return Application(
        [
            (r"/", MainHandler),
            (r"/login", LoginHandler),
            (r"/hello", HelloHandler),
            (r"/hello_result/([0-9a-f-]+)", ResultHandler),
            (r"/moi-ws/", MOIMessageHandler),  # moi: the websocket relay
            (r"/moi/(.*)", StaticFileHandler, {"path": str(STATIC_PATH)}),  # moi: moi.js and moi.css
        ],
        template_loader=DictLoader(TEMPLATES),
        cookie_secret=cookie_secret(settings().state_dir),
        login_url="/login",
        xsrf_cookies=True,
    )


async def main(port: int) -> None:
    make_app().listen(port, address="127.0.0.1")
    print(f"moi example on http://127.0.0.1:{port}/", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8889)
    asyncio.run(main(parser.parse_args().port))
