"""``moi run``, ``moi services`` and ``moi resubmit``: services from a terminal (see ``moi.services``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from moi import services
from moi.cli.output import exit_if_failed, format_info, wait_for
from moi.cli.policy_options import checked, policy_of, policy_options
from moi.cli.resource_options import resource_options, resources_of
from moi.core.errors import ConfigError
from moi.jobs import connections
from moi.services.resubmission import resubmit


def _pairs(given: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in given:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        params[name.strip()] = value
    return params


@click.command("run")
@click.argument("name")
@click.option("--param", "params", multiple=True, help="A parameter as NAME=VALUE (repeatable).")
@click.option("--input", "inputs", multiple=True, help="An input file, put in $INPUT (repeatable).")
@click.option("--email", default=None, help="Mail this address when the job ends.")
@click.option("--user", default="no-user", show_default=True, help="The user the job belongs to.")
@click.option("--context", default=None, help="The cluster context (default: the configured default).")
@click.option("--priority", default=None, help="low, normal (the default), high, or an integer.")
@click.option("--block", is_flag=True, help="Wait for the job to finish and print it.")
@policy_options
@resource_options
def run_command(
    name: str,
    params: tuple[str, ...],
    inputs: tuple[str, ...],
    email: str | None,
    user: str,
    context: str | None,
    priority: str | None,
    block: bool,
    **policy: Any,
) -> None:
    """Submit a job of service NAME (`moi services` lists them)."""
    asked = resources_of(policy)  # checked by the submit, over the service's: a bad one is one line
    limits = checked(policy_of(**policy), context or connections.settings().default_context, name)
    job_id, _, _ = services.submit(
        name,
        user,
        _pairs(params),
        files=list(inputs) or None,
        email=email,
        context=context,
        priority=priority,
        resources=asked or None,
        **limits,
    )
    click.echo(f"Submitted job id: {job_id}")
    if block:
        info = wait_for(job_id)
        click.echo(format_info(info))
        exit_if_failed([info])


@click.group("services", invoke_without_command=True)
@click.pass_context
def services_command(ctx: click.Context) -> None:
    """List the services this configuration knows, with their parameters."""
    if ctx.invoked_subcommand is not None:
        return
    known = services.known()
    if not known:
        click.echo("No services: register one, set [moi] services, or `moi services load FILE.yaml`")
    for name, cls in known.items():
        params = ", ".join(_shown(p) for p in cls.parameters) or "no parameters"
        steps = f"; steps: {' -> '.join(cls.step_names())}" if cls.step_names() else ""
        open_to_all = " (anonymous: no account needed)" if cls.anonymous else ""
        click.echo(f"{name}{open_to_all}: {params}{steps}")


def _shown(parameter: services.Parameter) -> str:
    if parameter.required:
        return f"{parameter.name} ({parameter.type}, required)"
    return f"{parameter.name} ({parameter.type}, default {parameter.default!r})"


@services_command.command("dump")
def dump_command() -> None:
    """Write every YAML-defined service as one YAML document (to stdout)."""
    sys.stdout.write(services.dump(connections.store()))


@services_command.command("load")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
def load_command(path: str) -> None:
    """Store the services a YAML file defines, for every process on this Redis (- reads stdin)."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    names = services.load_into(connections.store(), text, path)
    click.echo(f"Loaded {len(names)} service(s): {', '.join(names)}")


@click.command("resubmit")
@click.option("--job-id", required=True, help="A Failed service job.")
def resubmit_command(job_id: str) -> None:
    """Send a Failed service job back to the start, with its inputs."""
    resubmit(job_id)
    click.echo(f"Resubmitted job id: {job_id}")
