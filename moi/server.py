"""Public: ``moi server``'s Tornado application (``moi.web.server``)."""

from __future__ import annotations

from moi.web.file_routes import FILES_ROUTE
from moi.web.server import (
    DEV_LOGIN_WARNING,
    PACKAGE,
    SECRET_FILE,
    STATIC_PATH,
    TEMPLATE_PATH,
    LoginHandler,
    LogoutHandler,
    cookie_secret,
    default_hub,
    is_loopback,
    make_app,
    safe_next,
    serve,
)

__all__ = [
    "FILES_ROUTE",
    "DEV_LOGIN_WARNING",
    "LoginHandler",
    "LogoutHandler",
    "PACKAGE",
    "SECRET_FILE",
    "STATIC_PATH",
    "TEMPLATE_PATH",
    "cookie_secret",
    "default_hub",
    "is_loopback",
    "make_app",
    "safe_next",
    "serve",
]
