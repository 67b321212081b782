"""``moi submit``: one job (``--cmd``), or one job per line of a file (``--each``), sent as one batch."""

from __future__ import annotations

from typing import Any, TextIO

import click

from moi.cli.output import exit_if_failed, format_info, wait_for
from moi.cli.policy_options import checked, policy_of, policy_options
from moi.cli.resource_options import checked_resources, resource_options, resources_of
from moi.compute import watchdog
from moi.compute.text_jobs import check_code, python_exec, system_call
from moi.core.redact import printable
from moi.jobs import connections
from moi.jobs.batch import submit_many
from moi.jobs.submit import get_info, submit

DEFAULT_NAME = "no-user-cmd-submit"


@click.command("submit")
@click.option("--cmd", default=None, help="Python code (a function body) or a shell command.")
@click.option(
    "--each",
    type=click.File("r"),
    default=None,
    help="A file of commands (- for stdin): one job per line, sent as one batch; blank and # lines skipped.",
)
@click.option(
    "--cmd-type",
    type=click.Choice(["python", "system"]),
    default=None,
    help="[default: python for --cmd, system for --each]",
)
@click.option("--block", is_flag=True, help="Wait for the job to finish and print it.")
@click.option("--user", default=None, help="The user (group) the job belongs to.")
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="The job's name.")
@click.option("--context", default=None, help="The cluster context (default: the configured default).")
@click.option("--priority", default=None, help="low, normal (the default), high, or an integer.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    help="A file (or URI) put in the job's directory as $INPUT/<its name>; with --each, in every job's (repeatable).",
)
@policy_options
@resource_options
def submit_command(
    cmd: str | None,
    each: TextIO | None,
    cmd_type: str | None,
    block: bool,
    user: str | None,
    name: str,
    context: str | None,
    priority: str | None,
    inputs: tuple[str, ...],
    **options: Any,
) -> None:
    """Submit a job (--cmd), or one job per line of a file (--each)."""
    if cmd is not None and each is not None:
        raise click.UsageError("Give --cmd or --each, not both")
    ctx = context or connections.settings().default_context
    asked = checked_resources(resources_of(options), ctx)  # cores, memory ...: a bad one is a usage mistake
    limits = checked(policy_of(**options), ctx)  # time limit and retries: the same
    if asked:
        limits["resources"] = asked
    if each is not None:
        _submit_each(each, cmd_type or "system", block, user or "no-user", name, ctx, list(inputs) or None, limits)
        return
    if cmd is None:
        raise click.UsageError("Give --cmd (one job) or --each (a file of commands)")
    func = _command_function(cmd_type or "python", [cmd])
    # Queued in Redis; if this process leads the dispatching, its exit leaves work for the job.
    files = list(inputs) if inputs else None
    job_id, _, _ = submit(ctx, user or "no-user", name, None, func, cmd, priority=priority, files=files, **limits)
    click.echo(f"Submitted job id: {job_id}")
    if get_info(job_id).get("waiting") and not watchdog.controller_listening(
        connections.context_spec(ctx).connection_file()
    ):
        click.echo(f"Job {job_id} waits in the queue of context {ctx!r}: its cluster is not online", err=True)
    if block:
        info = wait_for(job_id)
        click.echo(format_info(info))
        exit_if_failed([info])


def _command_function(cmd_type: str, commands: list[str]) -> Any:
    """What runs the commands on an engine; Python code is compiled here first, so mistakes show now."""
    if cmd_type == "system":
        return system_call
    for code in commands:
        check_code(code)
    return python_exec


def _submit_each(
    lines: TextIO,
    cmd_type: str,
    block: bool,
    user: str,
    name: str,
    ctx: str,
    inputs: list[str] | None,
    limits: dict[str, Any],
) -> None:
    commands = _read_commands(lines)
    if not commands:
        raise click.UsageError(f"{lines.name} holds no commands")
    func = _command_function(cmd_type, commands)
    # Queued in Redis; if this process leads the dispatching, its exit leaves work for the jobs.
    items = [(command,) for command in commands]
    job_ids, _, _ = submit_many(ctx, user, name, None, func, items, files=inputs, **limits)
    for job_id in job_ids:
        click.echo(f"Submitted job id: {job_id}")
    if block:
        infos = [wait_for(job_id) for job_id in job_ids]
        click.echo("\n".join(format_info(info) for info in infos))
        exit_if_failed(infos)


def _read_commands(lines: TextIO) -> list[str]:
    """The commands of an --each file: its lines, without blank and # lines; a binary file is a usage mistake."""
    text: list[str] | None
    try:
        text = list(lines)
    except UnicodeDecodeError:
        text = None
    if text is None or any("\x00" in line for line in text):  # no shell command holds a NUL byte either
        raise click.BadParameter(f"{printable(lines.name)} is not a text file of commands", param_hint="'--each'")
    return [line.strip() for line in text if line.strip() and not line.lstrip().startswith("#")]
