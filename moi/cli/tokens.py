"""``moi token create|list|revoke``: API tokens from a terminal (see ``moi.storage.tokens``)."""

from __future__ import annotations

from datetime import datetime

import click

from moi.core.errors import InvalidExpiry, ServiceDefinitionError
from moi.jobs import connections
from moi.storage import tokens
from moi.storage.retention import parse_duration


@click.group("token")
def token_command() -> None:
    """Make, list and revoke API tokens (Authorization: Bearer)."""


@token_command.command("create")
@click.option("--user", required=True, help="The user the token acts as.")
@click.option("--admin", is_flag=True, help="It may also read every user's jobs.")
@click.option("--code", is_flag=True, help="It may run Python and shell jobs over the API (see [security]).")
@click.option("--name", default="", help="What it is for (a laptop, a pipeline), shown by `moi token list`.")
@click.option("--expires", default=None, help="How long it is valid: 12h, 30d, 2w (default: until revoked).")
def create_command(user: str, admin: bool, code: bool, name: str, expires: str | None) -> None:
    """Print a new token, once: moi keeps only its hash."""
    lifetime = _lifetime(expires)
    click.echo(tokens.create(connections.store(), user, admin=admin, name=name, expires_in=lifetime, code=code))


def _lifetime(text: str | None) -> float | None:
    """Seconds of ``--expires`` (None: never), or InvalidExpiry in one line."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text, "--expires")
    except ServiceDefinitionError:
        raise InvalidExpiry(text) from None
    if seconds is not None and seconds <= 0:
        raise InvalidExpiry(text)
    return seconds


@token_command.command("list")
def list_command() -> None:
    """Every token: id, user, role (admin, user+code or user), name, when made, when it expires, when last
    used (never the token)."""
    for token in tokens.listed(connections.store()):
        role = "admin" if token.admin else "user+code" if token.code else "user"
        click.echo(f"{token.id}\t{token.user}\t{role}\t{token.name or '-'}\t{token.created}\t{_times(token)}")


def _times(token: tokens.Token) -> str:
    """``expires <when>`` (or ``expired``, ``no expiry``), a tab, ``used <when>`` (or ``never used``)."""
    if token.expires is None:
        expiry = "no expiry"
    else:
        expiry = f"{'expired' if token.expired() else 'expires'} {_local(token.expires)}"
    used = f"used {_local(token.last_used)}" if token.last_used is not None else "never used"
    return f"{expiry}\t{used}"


def _local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


@token_command.command("revoke")
@click.argument("token_id")
def revoke_command(token_id: str) -> None:
    """Forget a token (its id from `moi token list`, or the token itself)."""
    tokens.revoke(connections.store(), token_id)
    click.echo(f"revoked {token_id[:16]}")
