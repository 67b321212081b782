"""``moi job``, ``userjobs``, ``users``, ``cancel``, ``relaunch``, ``pause`` and ``resume``: jobs from a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from moi.cli.output import EXIT_ERROR, format_info
from moi.core.errors import BadDocument, InvalidId, NotAGroup, UnknownKey
from moi.core.info import is_uuid
from moi.core.redact import printable
from moi.jobs import connections
from moi.jobs.cancel import cancel
from moi.jobs.submit import pause, relaunch, resume
from moi.storage.store import Store


@click.command("job")
@click.option("--job-id", required=True, help="The id of a job or group.")
def job_command(job_id: str) -> None:
    """Show one job."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    click.echo(format_info(connections.store().get(job_id)))


@click.command("userjobs")
@click.option("--key", required=True, help="A user name or a group id.")
@click.option("--summary", is_flag=True, help="One line per job.")
def userjobs_command(key: str, summary: bool) -> None:
    """Show a user's jobs, oldest first."""
    store = connections.store()
    bad: list[BadDocument] = []
    jobs = store.descendant_jobs(_group_of(store, key), bad)
    if summary:
        for info in jobs:
            click.echo(f"date: {info['date_created']}\tid: {info['id']}\tstatus: {info['status']}")
    else:
        click.echo("\n".join(format_info(info) for info in jobs))
    for error in bad:  # the good jobs are shown; each key that could not be is named
        click.echo(str(error), err=True)
    if bad:
        sys.exit(EXIT_ERROR)


def _group_of(store: Store, key: str) -> str:
    """The group id a --key names; when it names none, the one line says what the key is instead."""
    group_id = store.group_of_user(key)
    if group_id is not None:
        return group_id
    held = store.held(key)
    raise NotAGroup(key, held) if held else UnknownKey(key)


@click.command("users")
def users_command() -> None:
    """List the users moi knows, with their group ids."""
    for user, group_id in sorted(connections.store().users().items()):
        click.echo(f"{printable(user)}\t{printable(group_id)}")  # names anyone could write: no control characters


@click.command("cancel")
@click.option("--job-id", required=True, help="A job id, or a group id to cancel all its unfinished jobs.")
def cancel_command(job_id: str) -> None:
    """Cancel a queued or running job (or every unfinished job of a group)."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    report = cancel(job_id)
    click.echo(report.summary(job_id))
    for error in report.bad:  # the others were cancelled; each key that could not be is named
        click.echo(str(error), err=True)
    if report.bad:
        sys.exit(EXIT_ERROR)


@click.command("relaunch")
@click.option("--job-id", required=True, help="A finished job (Success, Failed or Cancelled).")
def relaunch_command(job_id: str) -> None:
    """Queue a finished job again, with the same function and arguments; the old one is kept."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    new_id, _, _ = relaunch(job_id)
    click.echo(f"Relaunched job id: {new_id} (relaunch of {job_id})")


def _scope_options(command: Any) -> Any:
    for option in (
        click.option("--job-id", default=None, help="One queued job."),
        click.option("--group", default=None, help="A group id: every queued job under it, nested groups too."),
        click.option("--user", default=None, help="A user: every queued job of theirs."),
        click.option("--context", default=None, help="A context: every job in its queue."),
    ):
        command = option(command)
    return command


def _one_scope(**given: str | None) -> dict[str, str]:
    chosen = {name: value for name, value in given.items() if value is not None}
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one of --context, --user, --group or --job-id")
    if "job_id" in chosen and not is_uuid(chosen["job_id"]):
        raise InvalidId(chosen["job_id"])
    return chosen


@click.command("pause")
@_scope_options
def pause_command(**given: str | None) -> None:
    """Hold queued jobs (and new ones) of a context, user, group or job; running ones finish."""
    _act_on_scope("Paused", "queued job(s) held", pause, given)


@click.command("resume")
@_scope_options
def resume_command(**given: str | None) -> None:
    """Queue again what ``moi pause`` held, in its old order."""
    _act_on_scope("Resumed", "job(s) queued again", resume, given)


def _act_on_scope(done: str, counted: str, action: Callable[..., list[str]], given: dict[str, str | None]) -> None:
    scope = _one_scope(**given)
    changed = action(**scope)
    ((kind, value),) = scope.items()
    click.echo(f"{done} {kind.replace('_', ' ')} {value}: {len(changed)} {counted}")
