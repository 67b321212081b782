"""The ``moi`` command: one group, whose commands each family module defines, and one-line errors."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from moi.cli.files import delete_command, download_command, fetch_command, files_command
from moi.cli.jobs import (
    cancel_command,
    job_command,
    pause_command,
    relaunch_command,
    resume_command,
    userjobs_command,
    users_command,
)
from moi.cli.operate import down_command, server_command, status_command, watchdog_command
from moi.cli.output import EXIT_ERROR
from moi.cli.services import resubmit_command, run_command, services_command
from moi.cli.submit import submit_command
from moi.cli.tokens import token_command
from moi.cli.users import user_command
from moi.core.errors import MoiError


class _Commands(click.Group):
    """A user's mistake is one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MoiError as error:
            click.echo(str(error), err=True)
            sys.exit(EXIT_ERROR)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """``moi files fetch JOB``: a command under ``moi files``, which itself lists (``moi files --job-id``)."""
        if args[:2] == ["files", "fetch"]:
            return "files fetch", fetch_command, args[2:]
        return super().resolve_command(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False  # so usage errors reach us as exceptions
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as error:  # usage mistakes: bad option values, missing options
            context = getattr(error, "ctx", None)
            hint = f" (see: {context.command_path} --help)" if context else ""
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=_Commands)
@click.option("-v", "--verbose", is_flag=True, help="Log what moi does.")
def main(verbose: bool) -> None:
    """Dispatch compute to an ipyparallel cluster and inspect jobs kept in Redis."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


for command in (
    submit_command,
    job_command,
    userjobs_command,
    users_command,
    cancel_command,
    relaunch_command,
    pause_command,
    resume_command,
    files_command,
    download_command,
    delete_command,
    run_command,
    services_command,
    resubmit_command,
    token_command,
    user_command,
    status_command,
    watchdog_command,
    down_command,
    server_command,
):
    main.add_command(command)
