"""``moi token create|list|revoke``: API tokens from a terminal (see ``moi.tokens``)."""

from __future__ import annotations

import click

from . import connections, tokens


@click.group("token")
def token_command() -> None:
    """Make, list and revoke API tokens (Authorization: Bearer)."""


@token_command.command("create")
@click.option("--user", required=True, help="The user the token acts as.")
@click.option("--admin", is_flag=True, help="It may also read every user's jobs.")
@click.option("--name", default="", help="What it is for (a laptop, a pipeline), shown by `moi token list`.")
def create_command(user: str, admin: bool, name: str) -> None:
    """Print a new token, once: moi keeps only its hash."""
    click.echo(tokens.create(connections.store(), user, admin=admin, name=name))


@token_command.command("list")
def list_command() -> None:
    """Every token: id, user, admin or not, name, when made (never the token itself)."""
    for token in tokens.listed(connections.store()):
        role = "admin" if token.admin else "user"
        click.echo(f"{token.id}\t{token.user}\t{role}\t{token.name or '-'}\t{token.created}")


@token_command.command("revoke")
@click.argument("token_id")
def revoke_command(token_id: str) -> None:
    """Forget a token (its id from `moi token list`, or the token itself)."""
    tokens.revoke(connections.store(), token_id)
    click.echo(f"revoked {token_id[:16]}")
