"""The checks of a login form (``dev``, ``password``, ``pam``), throttled and bounded.

A password (argon2) or a PAM conversation is checked in ``CHECKS``, a few threads of their own:
when they are all taken and their queue is full the login is refused at once (503, "busy"),
before its attempt is counted, and the rest of the server never waits behind a flood of logins.
Each attempt is reserved in the throttle (``moi.storage.login_throttle``) before its check, and
one client address (its throttle scope) has at most ``PER_ADDRESS`` checks in flight: one client
cannot take the whole pool and turn everyone else's logins away as busy.
With ``password`` and ``pam`` both on, a name with a password account is checked against it and any
other name through PAM. The development login logs in a name with no password only when that
name has no account (of either kind) and, beside a real method, is not one of ``[moi] admins``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

from moi.core.bounded_pool import BoundedPool
from moi.core.redact import printable
from moi.jobs import connections
from moi.relay.hub import Hub
from moi.storage import accounts, login_throttle
from moi.web.pam_check import pam_refusal, unix_account
from moi.web.proxy import limited

CHECKS = BoundedPool(workers=2, waiting=8, name="moi-login-check")

BUSY = "The server is busy checking other logins; try again in a moment."
PER_ADDRESS = 2  # checks in flight from one client address (its throttle scope), at most
ADDRESS_BUSY = "Your other logins are still being checked; try again in a moment."
_in_flight: collections.Counter[str] = collections.Counter()  # touched from the event loop's thread only


@contextlib.contextmanager
def address_place(address: str) -> Iterator[bool]:
    """A place among ``address``'s checks in flight while the block runs; False when it has none left."""
    scope = login_throttle.address_scope(address)
    if _in_flight[scope] >= PER_ADDRESS:
        yield False
        return
    _in_flight[scope] += 1
    try:
        yield True
    finally:
        _in_flight[scope] -= 1
        if not _in_flight[scope]:
            del _in_flight[scope]


REAL_METHODS = frozenset({"password", "pam"})


def wrong_answer(methods: frozenset[str]) -> str:
    """The one answer of a wrong password, an unknown name and (with pam) a locked account."""
    return "Wrong user name or password, or a locked account." if "pam" in methods else "Wrong user name or password."


@dataclass(frozen=True)
class Checked:
    """A check's verdict: logged in (whether an admin), or refused with ``refusal`` and ``status``."""

    admin: bool | None
    refusal: str = ""
    status: int = 401


async def dev_login(hub: Hub, user: str, password: str, methods: frozenset[str]) -> bool:
    """Whether the development login logs ``user`` in, with no password."""
    if "dev" not in methods or password:
        return False
    if methods == {"dev"}:
        return True  # the development login alone: loopback only, any name
    if user in connections.settings().admin_names:
        return False  # an admin logs in with a real method, never by just typing the name
    if "pam" in methods and await _is_unix_account(user):
        return False
    return not ("password" in methods and await accounts.exists(hub.redis, hub.keys, hub.url, user))


async def _is_unix_account(user: str) -> bool:
    """``unix_account`` off the event loop (NSS may ask LDAP); a full pool counts as an account: no dev login."""
    with CHECKS.place() as placed:
        return not placed or await CHECKS.run(functools.partial(unix_account, user))


async def checked_login(hub: Hub, user: str, password: str, address: str) -> Checked:
    """A password or PAM login of ``user`` from ``address``, throttled; never shows nor logs the password."""
    methods = connections.settings().login_methods
    with CHECKS.place() as placed, address_place(address) as mine:
        if not placed or not mine:
            limited.warning("refused a login for %s from %s: busy", printable(user), printable(address))
            return Checked(None, BUSY, 503) if not placed else Checked(None, ADDRESS_BUSY, 429)
        free = login_throttle.scopes(user, address)
        wait = await login_throttle.reserve(hub.redis, hub.keys, hub.url, free)
        if wait:
            limited.info("refused a login for %s from %s: throttled", printable(user), printable(address))
            return Checked(None, f"Too many failed logins; try again in {wait} s.", 429)
        verdict = await _checked(hub, user, password, methods)
    if verdict.admin is None:
        limited.info("failed login for %s from %s", printable(user), printable(address))
        return verdict if verdict.refusal else Checked(None, wrong_answer(methods))
    await login_throttle.succeeded(hub.redis, hub.keys, hub.url, free)
    return verdict


async def _checked(hub: Hub, user: str, password: str, methods: frozenset[str]) -> Checked:
    """The check proper, in ``CHECKS`` (its place held)."""
    if "password" in methods and ("pam" not in methods or await accounts.exists(hub.redis, hub.keys, hub.url, user)):
        account = await accounts.verify(hub.redis, hub.keys, hub.url, user, password, CHECKS)
        return Checked(account.admin if account is not None else None)
    service = connections.settings().pam_service
    refusal = await CHECKS.run(functools.partial(pam_refusal, user, password[: accounts.MAX_LENGTH + 1], service))
    return Checked(False) if refusal is None else Checked(None, refusal)
