"""``moi user add|passwd|admin|remove|list|logout``: the accounts of ``moi server``'s password login.

See ``moi.storage.accounts`` (the accounts), ``moi.storage.sessions`` (page logins) and
``moi.storage.tokens`` (API tokens). A password is read from a prompt, twice, or from
stdin (``--password-stdin``, its first line); it is never echoed, printed nor logged.
"""

from __future__ import annotations

import sys

import click

from moi.jobs import connections
from moi.storage import accounts, sessions


@click.group("user")
def user_command() -> None:
    """Make, change, list and remove the accounts of the server's password login."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


_STDIN = click.option("--password-stdin", is_flag=True, help="Read the password from stdin's first line.")


@user_command.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The user is an admin of the server (as [moi] admins).")
@_STDIN
def add_command(name: str, admin: bool, password_stdin: bool) -> None:
    """Make an account NAME; its password from a prompt (twice) or stdin."""
    accounts.add(connections.store(), name, _password(password_stdin), admin=admin)
    click.echo(f"added {name}{' (admin)' if admin else ''}")


@user_command.command("passwd")
@click.argument("name")
@_STDIN
def passwd_command(name: str, password_stdin: bool) -> None:
    """Change NAME's password, and end their page logins (their API tokens go on; `moi user logout` ends both)."""
    ended = accounts.set_password(connections.store(), name, _password(password_stdin))
    click.echo(f"changed the password of {name}; ended {ended} login(s)")


@user_command.command("remove")
@click.argument("name")
def remove_command(name: str) -> None:
    """Remove NAME's account, and end their logins and API tokens."""
    ended = accounts.remove(connections.store(), name)
    click.echo(f"removed {name}; {_ended(name, *ended)}")


@user_command.command("list")
def list_command() -> None:
    """Every account: name, admin or user, when made (never a password nor its hash)."""
    for account in accounts.listed(connections.store()):
        click.echo(f"{account.name}\t{'admin' if account.admin else 'user'}\t{account.created}")


@user_command.command("logout")
@click.argument("name")
def logout_command(name: str) -> None:
    """End every page login of NAME and revoke their API tokens, at once."""
    click.echo(_ended(name, *sessions.end_everything(connections.store(), name)))


@user_command.command("admin")
@click.argument("name")
@click.option("--off", is_flag=True, help="Take the flag: their logins end and their admin tokens are revoked.")
def admin_command(name: str, off: bool) -> None:
    """Make NAME's account an admin's (from their next login), or with --off no longer."""
    ended = accounts.set_admin(connections.store(), name, not off)
    click.echo(f"{name} is {'no longer ' if off else ''}an admin" + (f"; {_ended(name, *ended)}" if off else ""))


def _ended(name: str, logins: int, revoked: int) -> str:
    return f"ended {logins} login(s) and revoked {revoked} token(s) of {name}"
