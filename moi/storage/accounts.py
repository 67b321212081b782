"""Password accounts of ``moi server``'s ``password`` login (``[server] logins``), made by ``moi user add``.

An account is kept in ``moi:accounts`` (a hash by login name) as JSON: the argon2id hash
of its password, whether its user is an admin of the server, when it was made. The
password itself is never kept, logged or shown. ``verify`` checks a login against a
dummy hash when there is no such account, so an unknown name costs the same work and
gets the same answer as a wrong password; argon2's check compares in constant time.

``moi user`` (the operator) and the admins' API (``moi.web.api_accounts``) change accounts through the
same functions here, with the same side effects: a new password ends the user's logins; removing an
account ends their logins and revokes their tokens; taking the admin flag ends their logins and revokes
their admin tokens (a login keeps the flag it was made with). From the web, ``keep_an_admin`` refuses to
remove or demote the last admin account, so the server cannot lose its last account admin by a click.
The errors, under ``moi.core.errors.AccountError``: UnknownAccount, AccountExists, PasswordRefused, LastAdmin.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError
from redis.exceptions import WatchError

from moi.core.bounded_pool import BoundedPool
from moi.core.errors import AccountError, InvalidUserName
from moi.core.info import now
from moi.core.keys import Keys, user_name_problem
from moi.core.redact import printable
from moi.storage import sessions, tokens
from moi.storage.redis_errors import reaching
from moi.storage.store import Store
from moi.storage.tokens import reading

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 takes any length; a bound keeps a login request cheap to refuse
_hasher = PasswordHasher()
_TRIES = 20  # rounds of an optimistic (WATCH) change before giving up to a busier writer


class UnknownAccount(AccountError):
    """No password account by that name."""


class AccountExists(AccountError):
    """A new account under a name that has one."""


class PasswordRefused(AccountError):
    """A new password too short or too long; the message never holds it."""


class LastAdmin(AccountError):
    """Removing or demoting, from the web, the one admin account left (``moi user`` on the server may)."""


@dataclass(frozen=True)
class Account:
    """What ``moi user list`` shows: never the hash."""

    name: str
    admin: bool
    created: str


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"it has fewer than {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"it has more than {MAX_LENGTH} characters"
    return None


def _checked(name: str, password: str) -> None:
    problem = user_name_problem(name)
    if problem is None and name != name.strip():
        problem = "it starts or ends with a space, which the login form trims: it could never log in"
    if problem is not None:
        raise InvalidUserName(name, problem)
    problem = password_problem(password)
    if problem is not None:
        raise PasswordRefused(f"That password is refused: {problem}")


def add(store: Store, name: str, password: str, admin: bool = False) -> None:
    """A new account; AccountError when the name has one."""
    _checked(name, password)
    kept = {"argon2": _hasher.hash(password), "admin": admin, "created": now()}
    with reaching(store.url):
        if not store.redis.hsetnx(store.keys.accounts, name, json.dumps(kept)):
            raise AccountExists(f"Account {printable(name)!r} exists already; `moi user passwd` changes its password")


def set_password(store: Store, name: str, password: str) -> int:
    """A new password for an account (its admin flag and date kept), and its user's logins ended (how many);
    UnknownAccount when there is none. Their API tokens go on (``sessions.end_everything`` ends both)."""
    _checked(name, password)
    digest = _hasher.hash(password)
    _change(store, name, lambda kept: {**kept, "argon2": digest})
    return sessions.end_all(store, name)


def set_admin(store: Store, name: str, admin: bool, keep_an_admin: bool = False) -> tuple[int, int]:
    """Give or take an account's admin flag. Taking it ends the user's logins and revokes their admin
    tokens: (logins ended, tokens revoked); giving it counts from their next login: (0, 0).
    ``keep_an_admin``: LastAdmin rather than demote the last admin account."""

    def flagged(kept: dict[str, Any]) -> dict[str, Any]:
        return {**kept, "admin": admin}

    was_admin = _change(store, name, flagged, keep_an_admin and not admin)
    if admin or not was_admin:
        return 0, 0
    return sessions.end_all(store, name), tokens.revoke_of(store, name, admin_only=True)


def remove(store: Store, name: str, keep_an_admin: bool = False) -> tuple[int, int]:
    """Remove an account, end its user's logins and revoke their tokens: (logins ended, tokens revoked).
    ``keep_an_admin``: LastAdmin rather than remove the last admin account."""
    _change(store, name, None, keep_an_admin)
    return sessions.end_everything(store, name)


def _change(
    store: Store, name: str, change: Callable[[dict[str, Any]], dict[str, Any]] | None, keep_an_admin: bool = False
) -> bool:
    """Rewrite ``name``'s record by ``change`` (None: delete it), atomically with the check that another
    admin account is left when ``keep_an_admin``; whether the account was an admin's."""
    with reaching(store.url):
        for _ in range(_TRIES):
            with contextlib.suppress(WatchError), store.redis.pipeline(transaction=True) as pipe:
                pipe.watch(store.keys.accounts)
                every = cast(dict[str, str], pipe.hgetall(store.keys.accounts))  # watched: read at once
                if name not in every:
                    raise UnknownAccount(f"No account {printable(name)!r}; `moi user list` shows them")
                was_admin = _account(name, every[name]).admin
                if keep_an_admin and was_admin and _admins(every) == 1:
                    raise LastAdmin(f"{printable(name)!r} is the last admin account: make another admin first")
                pipe.multi()
                if change is None:
                    pipe.hdel(store.keys.accounts, name)
                else:
                    pipe.hset(store.keys.accounts, name, json.dumps(change(_record(every[name]))))
                pipe.execute()
                return was_admin
    raise AccountError("The accounts kept changing meanwhile; try again")


def _admins(every: dict[str, str]) -> int:
    return sum(_account(name, text).admin for name, text in every.items())


def listed(store: Store) -> list[Account]:
    """Every account, by name."""
    with reaching(store.url):
        kept = store.redis.hgetall(store.keys.accounts)
    return [_account(name, text) for name, text in sorted(kept.items())]


def is_admin(store: Store, name: str) -> bool:
    with reaching(store.url):
        text = store.redis.hget(store.keys.accounts, name)
    return text is not None and _account(name, text).admin


async def exists(client: aioredis.Redis[str], keys: Keys, url: str, name: str) -> bool:
    with reading(url):
        return bool(await client.hexists(keys.accounts, name))


async def is_admin_async(client: aioredis.Redis[str], keys: Keys, url: str, name: str) -> bool:
    with reading(url):
        text = await client.hget(keys.accounts, name)
    return text is not None and _account(name, text).admin


async def verify(
    client: aioredis.Redis[str], keys: Keys, url: str, name: str, password: str, pool: BoundedPool
) -> Account | None:
    """The account when ``password`` is its password; None otherwise (no such account too, after the same work).
    The hash is checked in ``pool`` (the caller made sure it is not full); a hash made with other argon2
    parameters than today's is made again, with today's, once the password matched."""
    with reading(url):
        text = await client.hget(keys.accounts, name)
    kept = _record(text) if text is not None else {}
    digest = str(kept.get("argon2") or await pool.run(_dummy))  # its first call hashes: not on the loop
    matched = await pool.run(functools.partial(_matches, digest, password[: MAX_LENGTH + 1]))
    if not matched or text is None:
        return None
    if _hasher.check_needs_rehash(digest):
        fresh = await pool.run(functools.partial(_hasher.hash, password))
        await _replace_hash(client, keys, url, name, digest, fresh)
    return _account(name, text)


async def _replace_hash(client: aioredis.Redis[str], keys: Keys, url: str, name: str, old: str, new: str) -> None:
    """Keep ``new`` as ``name``'s hash, unless the account changed meanwhile (a new password stays)."""
    with reading(url), contextlib.suppress(WatchError):
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.accounts)
            text = await pipe.hget(keys.accounts, name)
            if text is None or _record(text).get("argon2") != old:
                return
            pipe.multi()
            pipe.hset(keys.accounts, name, json.dumps({**_record(text), "argon2": new}))
            await pipe.execute()


def _matches(digest: str, password: str) -> bool:
    try:
        return _hasher.verify(digest, password)
    except (Argon2Error, InvalidHashError):
        return False


@functools.cache
def _dummy() -> str:
    """A hash no password matches in practice, made once: what an unknown name is checked against."""
    return _hasher.hash("moi: no such account")


def _record(text: str) -> dict[str, Any]:
    try:
        kept = json.loads(text)
    except ValueError:
        return {}
    return kept if isinstance(kept, dict) else {}


def _account(name: str, text: str) -> Account:
    kept = _record(text)
    return Account(name, kept.get("admin") is True, str(kept.get("created") or "?"))
