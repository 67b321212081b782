"""The ``moi`` command: submit jobs and look at them from a terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import click

from . import connections, runtime, watchdog
from .errors import InvalidId, MoiError
from .info import SEED_FIELDS, Info, is_finished, is_uuid
from .job import cancel, check_code, python_exec, submit, submit_many, system_call

DEFAULT_NAME = "no-user-cmd-submit"


class _Commands(click.Group):
    """A user's mistake is one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MoiError as error:
            click.echo(str(error), err=True)
            sys.exit(1)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False  # so usage errors reach us as exceptions
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
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


@main.command("submit")
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
def submit_command(
    cmd: str | None,
    each: TextIO | None,
    cmd_type: str | None,
    block: bool,
    user: str | None,
    name: str,
    context: str | None,
) -> None:
    """Submit a job (--cmd), or one job per line of a file (--each)."""
    if cmd is not None and each is not None:
        raise click.UsageError("Give --cmd or --each, not both")
    ctx = context or connections.settings().default_context
    if each is not None:
        _submit_each(each, cmd_type or "system", block, user or "no-user", name, ctx)
        return
    if cmd is None:
        raise click.UsageError("Give --cmd (one job) or --each (a file of commands)")
    func = _command_function(cmd_type or "python", [cmd])
    job_id, _, handle = submit(ctx, user or "no-user", name, None, func, cmd)
    connections.get_context(ctx).confirm_delivery(handle.msg_ids)  # this process may exit next
    click.echo(f"Submitted job id: {job_id}")
    if block:
        click.echo(format_info(wait_for(job_id)))


def _command_function(cmd_type: str, commands: list[str]) -> Any:
    """What runs the commands on an engine; Python code is compiled here first, so mistakes show now."""
    if cmd_type == "system":
        return system_call
    for code in commands:
        check_code(code)
    return python_exec


def _submit_each(lines: TextIO, cmd_type: str, block: bool, user: str, name: str, ctx: str) -> None:
    commands = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not commands:
        raise click.UsageError(f"{lines.name} holds no commands")
    func = _command_function(cmd_type, commands)
    job_ids, _, batch = submit_many(ctx, user, name, None, func, [(command,) for command in commands])
    # this process may exit next: the controller must hold the tasks first
    connections.get_context(ctx).confirm_delivery([msg_id for handle in batch.handles for msg_id in handle.msg_ids])
    for job_id in job_ids:
        click.echo(f"Submitted job id: {job_id}")
    if block:
        click.echo("\n".join(format_info(wait_for(job_id)) for job_id in job_ids))


@main.command("job")
@click.option("--job-id", required=True, help="The id of a job or group.")
def job_command(job_id: str) -> None:
    """Show one job."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    click.echo(format_info(connections.store().get(job_id)))


@main.command("userjobs")
@click.option("--key", required=True, help="A user name or a group id.")
@click.option("--summary", is_flag=True, help="One line per job.")
def userjobs_command(key: str, summary: bool) -> None:
    """Show a user's jobs, oldest first."""
    store = connections.store()
    group_id = store.group_of_user(key)
    if group_id is None:
        from .errors import UnknownKey

        raise UnknownKey(key)
    jobs = store.descendant_jobs(group_id)
    if summary:
        for info in jobs:
            click.echo(f"date: {info['date_created']}\tid: {info['id']}\tstatus: {info['status']}")
    else:
        click.echo("\n".join(format_info(info) for info in jobs))


@main.command("users")
def users_command() -> None:
    """List the users moi knows, with their group ids."""
    for user, group_id in sorted(connections.store().users().items()):
        click.echo(f"{user}\t{group_id}")


@main.command("status")
def status_command() -> None:
    """Say what runs and where."""
    settings = connections.settings()
    info = runtime.read(Path(settings.state_dir))
    if info is None:
        click.echo(f"local runtime: not running (state directory {settings.state_dir})")
    else:
        click.echo(
            f"local runtime: running (pid {info.pid}, since {info.started}, state directory {settings.state_dir})"
        )
        click.echo(f"  redis: {info.redis_url} (pid {info.redis_pid})")
        click.echo(f"  cluster: {info.engines} engines, connection file {info.url_file}")
    if not settings.uses_embedded_redis:
        click.echo(f"configured redis: {settings.redis_url}")
    for spec in settings.contexts.values():
        target = spec.url_file or ":".join(filter(None, [spec.profile, spec.cluster_id]))
        click.echo(f"configured context: {spec.name} -> {target}")
    click.echo(f"default context: {settings.default_context}")


@main.command("cancel")
@click.option("--job-id", required=True, help="A job id, or a group id to cancel all its unfinished jobs.")
def cancel_command(job_id: str) -> None:
    """Cancel a queued or running job (or every unfinished job of a group)."""
    if not is_uuid(job_id):
        raise InvalidId(job_id)
    click.echo(cancel(job_id).summary(job_id))


@main.command("watchdog")
@click.option("--once", is_flag=True, help="One pass that fails stranded jobs at once, then exit.")
@click.option("--interval", type=float, default=watchdog.INTERVAL, show_default=True, help="Seconds between passes.")
def watchdog_command(once: bool, interval: float) -> None:
    """Fail jobs whose engine died or whose cluster went away (for clusters moi did not start)."""
    store = connections.store()
    if once:
        # No second look here, so no grace: only for a cluster known to be down.
        for job_id in watchdog.Watchdog(store, grace=0, queued_grace=0).check():
            click.echo(f"failed stranded job {job_id}")
        return
    click.echo(f"watching jobs in {store.url} every {interval:g}s; Ctrl-C stops")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        watchdog.run_forever(store, threading.Event(), interval)


@main.command("down")
def down_command() -> None:
    """Stop the local runtime (its Redis and cluster)."""
    settings = connections.settings()
    stopped = runtime.stop(Path(settings.state_dir))
    click.echo("local runtime stopped" if stopped else "local runtime was not running")


@main.command("server")
@click.option("--port", default=8888, show_default=True, type=int, help="The port to serve on.")
@click.option("--address", default="127.0.0.1", show_default=True, help="The address to listen on.")
def server_command(port: int, address: str) -> None:
    """Serve each user's live job list (development login at /login)."""
    import asyncio

    from .server import serve

    connections.redis_url()  # start (or find) the runtime first
    try:
        asyncio.run(serve(port, address, lambda url: click.echo(f"moi server: {url} (Ctrl-C stops it)")))
    except OSError as error:
        raise click.ClickException(f"cannot serve on {address}:{port}: {error.strerror or error}") from None


# output -------------------------------------------------------------------------


def format_info(info: Info) -> str:
    """The seed's block: a header, sorted ``key<tab>: value`` lines, result last."""
    lines = [f"********** {info['id']} **********"]
    extra = sorted(set(info) - set(SEED_FIELDS))
    for key in sorted(set(SEED_FIELDS) - {"result"}) + extra:
        lines.append(f"{key}{_tabs(key)}: {info.get(key)}")
    lines.append(f"result{_tabs('result')}: {_show_result(info.get('result'))}")
    return "\n".join(lines)


def _tabs(key: str) -> str:
    return "\t" if len(key) >= 8 else "\t\t"


def _show_result(result: Any) -> str:
    # Tracebacks and text print as they are, so they read as they would in a terminal.
    return result if isinstance(result, str) else repr(result)


def wait_for(job_id: str, timeout: float | None = None, poll: float = 1.0) -> Info:
    """Block until the job is finished; listens for its updates, re-reads on each.

    Raises TimeoutError when ``timeout`` seconds pass first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    store = connections.store()
    # A waiter watches too: a job whose engine died ends even if nothing else runs a watchdog.
    guard, next_check = watchdog.Watchdog(store), time.monotonic() + watchdog.INTERVAL
    pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.keys.channel(job_id))  # before reading: no update can slip by
    try:
        info = store.get(job_id)
        while not is_finished(info):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info['status']} after {timeout}s")
            pubsub.get_message(timeout=poll)
            if time.monotonic() >= next_check:
                watchdog.check_logging(guard)
                next_check = time.monotonic() + watchdog.INTERVAL
            info = store.get(job_id)
        return info
    finally:
        pubsub.close()


if __name__ == "__main__":
    main()
