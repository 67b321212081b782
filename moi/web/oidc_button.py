"""The login page's "Log in with ..." button of the ``oidc`` login (``moi.web.login_oidc``)."""

from __future__ import annotations

from moi.jobs import connections


def login_oidc_button() -> str | None:
    """The provider's name on the button (``[server] oidc_name``) when the oidc login is on; None otherwise."""
    settings = connections.settings()
    return settings.oidc_name if "oidc" in settings.login_methods else None
