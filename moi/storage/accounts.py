"""Password accounts of ``moi server``'s ``password`` login (``[server] logins``), made by ``moi user add``.

An account is kept in ``moi:accounts`` (a hash by login name) as JSON: the argon2id hash
of its password, whether its user is an admin of the server, when it was made. The
password itself is never kept, logged or shown. ``verify`` checks a login against a
dummy hash when there is no such account, so an unknown name costs the same work and
gets the same answer as a wrong password; argon2's check compares in constant time.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError
from redis.exceptions import WatchError

from moi.core.bounded_pool import BoundedPool
from moi.core.errors import AccountError, InvalidUserName
from moi.core.info import now
from moi.core.keys import Keys, user_name_problem
from moi.core.redact import printable
from moi.storage.redis_errors import reaching
from moi.storage.store import Store
from moi.storage.tokens import reading

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 takes any length; a bound keeps a login request cheap to refuse
_hasher = PasswordHasher()


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
    if problem is not None:
        raise InvalidUserName(name, problem)
    problem = password_problem(password)
    if problem is not None:
        raise AccountError(f"That password is refused: {problem}")


def add(store: Store, name: str, password: str, admin: bool = False) -> None:
    """A new account; AccountError when the name has one."""
    _checked(name, password)
    kept = {"argon2": _hasher.hash(password), "admin": admin, "created": now()}
    with reaching(store.url):
        if not store.redis.hsetnx(store.keys.accounts, name, json.dumps(kept)):
            raise AccountError(f"Account {printable(name)!r} exists already; `moi user passwd` changes its password")


def set_password(store: Store, name: str, password: str) -> None:
    """A new password for an account (its admin flag and date kept); AccountError when there is none."""
    _checked(name, password)
    with reaching(store.url):
        text = store.redis.hget(store.keys.accounts, name)
        if text is None:
            raise AccountError(f"No account {printable(name)!r}; `moi user list` shows them")
        kept = {**_record(text), "argon2": _hasher.hash(password)}
        store.redis.hset(store.keys.accounts, name, json.dumps(kept))


def remove(store: Store, name: str) -> None:
    with reaching(store.url):
        if not store.redis.hdel(store.keys.accounts, name):
            raise AccountError(f"No account {printable(name)!r}; `moi user list` shows them")


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
    digest = str(kept.get("argon2") or _dummy())
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
