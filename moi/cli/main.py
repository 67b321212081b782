"""The ``moi`` command: submit jobs and look at them from a terminal."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click

from . import connections, loops, runtime, watchdog
from .cli_files import delete_command, download_command, files_command
from .cli_services import resubmit_command, run_command, services_command
from .cli_tokens import token_command
from .errors import BadDocument, InvalidId, MoiError, NotAGroup, UnknownKey
from .info import SEED_FIELDS, Info, Status, is_finished, is_uuid
from .job import (
    cancel,
    check_code,
    get_info,
    pause,
    python_exec,
    relaunch,
    resume,
    submit,
    submit_many,
    system_call,
)
from .redact import masked_url, printable
from .store import Store, reaching

DEFAULT_NAME = "no-user-cmd-submit"

# Exit statuses, so a script can tell a refusal from a job that ran and failed.
EXIT_ERROR = 1  # moi could not do what was asked (the one-line error says why)
EXIT_USAGE = 2  # a usage mistake: a bad or missing option (click's own code)
EXIT_JOB_FAILED = 3  # a job waited for (or any item of a batch) ended Failed or Cancelled


class _Commands(click.Group):
    """A user's mistake is one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MoiError as error:
            click.echo(str(error), err=True)
            sys.exit(EXIT_ERROR)

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


main.add_command(files_command)
main.add_command(download_command)
main.add_command(delete_command)
main.add_command(run_command)
main.add_command(services_command)
main.add_command(resubmit_command)
main.add_command(token_command)


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
@click.option("--priority", default=None, help="low, normal (the default), high, or an integer.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    help="A file (or URI) put in the job's directory as $INPUT/<its name>; with --each, in every job's (repeatable).",
)
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
) -> None:
    """Submit a job (--cmd), or one job per line of a file (--each)."""
    if cmd is not None and each is not None:
        raise click.UsageError("Give --cmd or --each, not both")
    ctx = context or connections.settings().default_context
    if each is not None:
        _submit_each(each, cmd_type or "system", block, user or "no-user", name, ctx, list(inputs) or None)
        return
    if cmd is None:
        raise click.UsageError("Give --cmd (one job) or --each (a file of commands)")
    func = _command_function(cmd_type or "python", [cmd])
    # Queued in Redis; if this process leads the dispatching, its exit leaves work for the job.
    files = list(inputs) if inputs else None
    job_id, _, _ = submit(ctx, user or "no-user", name, None, func, cmd, priority=priority, files=files)
    click.echo(f"Submitted job id: {job_id}")
    if get_info(job_id).get("waiting") and not watchdog.controller_listening(
        connections.context_spec(ctx).connection_file()
    ):
        click.echo(f"Job {job_id} waits in the queue of context {ctx!r}: its cluster is not online", err=True)
    if block:
        info = wait_for(job_id)
        click.echo(format_info(info))
        _exit_if_failed([info])


def _exit_if_failed(infos: list[Info]) -> None:
    """Exit EXIT_JOB_FAILED when any job waited for did not succeed: ``moi submit --block && next`` stops."""
    if any(info["status"] in (Status.FAILED, Status.CANCELLED) for info in infos):
        sys.exit(EXIT_JOB_FAILED)


def _command_function(cmd_type: str, commands: list[str]) -> Any:
    """What runs the commands on an engine; Python code is compiled here first, so mistakes show now."""
    if cmd_type == "system":
        return system_call
    for code in commands:
        check_code(code)
    return python_exec


def _submit_each(
    lines: TextIO, cmd_type: str, block: bool, user: str, name: str, ctx: str, inputs: list[str] | None
) -> None:
    commands = _read_commands(lines)
    if not commands:
        raise click.UsageError(f"{lines.name} holds no commands")
    func = _command_function(cmd_type, commands)
    # Queued in Redis; if this process leads the dispatching, its exit leaves work for the jobs.
    job_ids, _, _ = submit_many(ctx, user, name, None, func, [(command,) for command in commands], files=inputs)
    for job_id in job_ids:
        click.echo(f"Submitted job id: {job_id}")
    if block:
        infos = [wait_for(job_id) for job_id in job_ids]
        click.echo("\n".join(format_info(info) for info in infos))
        _exit_if_failed(infos)


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


@main.command("users")
def users_command() -> None:
    """List the users moi knows, with their group ids."""
    for user, group_id in sorted(connections.store().users().items()):
        click.echo(f"{printable(user)}\t{printable(group_id)}")  # names anyone could write: no control characters


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
        click.echo(f"  redis: {masked_url(info.redis_url)} (pid {info.redis_pid}, password protected)")
        click.echo(f"  cluster: {info.engines} engines, connection file {info.url_file}")
    if not settings.uses_embedded_redis:
        click.echo(f"configured redis: {masked_url(settings.redis_url or '')}")
    for spec in settings.contexts.values():
        target = spec.url_file or ":".join(filter(None, [spec.profile, spec.cluster_id]))
        click.echo(f"configured context: {spec.name} -> {target}")
    click.echo(f"default context: {settings.default_context}")
    store = connections.running_store()
    if store is None:  # the local runtime holds the Redis, and it is not running: status never starts it
        for name in connections.context_specs():
            click.echo(f"context {name}: offline (the local runtime is not running)")
        return
    for name in connections.context_specs():
        click.echo(_context_line(name))
    with reaching(store.url):
        waiting, lost = store.redis.llen(store.keys.mail), store.redis.get(store.keys.mail_failed)
    if waiting or lost or settings.smtp_host:
        click.echo(f"mail: {waiting} waiting, {int(lost or 0)} not sent (see the log)")
    for line in _loop_lines(store):
        click.echo(line)


def _loop_lines(store: Store) -> list[str]:
    """``loop NAME: N failed items, M restarts; last at TIME: LINE`` for each loop that failed (see moi.loops)."""
    lines = []
    for name, record in loops.read(store).items():
        if record.errors or record.restarts:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.at)) if record.at else "?"
            counts = f"{record.errors} failed items, {record.restarts} restarts"
            lines.append(f"loop {name}: {counts}; last at {when}: {printable(record.last, 300)}")
    return lines


def _context_line(name: str) -> str:
    """``context NAME: online|offline, N queued``, as its dispatcher (or a probe from here) sees it."""
    store = connections.store()
    with reaching(store.url):
        note, depth = store.redis.get(store.keys.online(name)), store.redis.zcard(store.keys.queue(name))
    if note is not None:
        engines = json.loads(note).get("engines", "?")
        return f"context {name}: online, {engines} engines, {depth} queued"
    spec_file = (
        None if connections.settings().uses_embedded_cluster else connections.context_spec(name).connection_file()
    )
    reachable = spec_file is not None and watchdog.controller_listening(spec_file)
    state = "online (no dispatcher running)" if reachable else "offline"
    return f"context {name}: {state}, {depth} queued"


@main.command("cancel")
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


@main.command("relaunch")
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


@main.command("pause")
@_scope_options
def pause_command(**given: str | None) -> None:
    """Hold queued jobs (and new ones) of a context, user, group or job; running ones finish."""
    _act_on_scope("Paused", "queued job(s) held", pause, given)


@main.command("resume")
@_scope_options
def resume_command(**given: str | None) -> None:
    """Queue again what ``moi pause`` held, in its old order."""
    _act_on_scope("Resumed", "job(s) queued again", resume, given)


def _act_on_scope(done: str, counted: str, action: Callable[..., list[str]], given: dict[str, str | None]) -> None:
    scope = _one_scope(**given)
    changed = action(**scope)
    ((kind, value),) = scope.items()
    click.echo(f"{done} {kind.replace('_', ' ')} {value}: {len(changed)} {counted}")


@main.command("watchdog")
@click.option(
    "--once", is_flag=True, help="One pass that fails stranded jobs at once and sweeps gone jobs' files, then exit."
)
@click.option("--interval", type=float, default=watchdog.INTERVAL, show_default=True, help="Seconds between passes.")
def watchdog_command(once: bool, interval: float) -> None:
    """Fail jobs whose engine died, and dispatch every context's queue (for clusters moi did not start)."""
    store = connections.store()
    if once:
        # No second look here, so no grace: only for a cluster known to be down.
        for job_id in watchdog.Watchdog(store, grace=0).check():
            click.echo(f"failed stranded job {job_id}")
        for job_id in watchdog.sweep_logging(store):
            click.echo(f"removed the files of gone job {job_id}")
        for job_id in watchdog.retention_logging(store):
            click.echo(f"moved service job {job_id} on by its retention")
        _send_mail_once(store)
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    click.echo(f"watching jobs in {masked_url(store.url)} every {interval:g}s; Ctrl-C or SIGTERM stops")
    connections.dispatch_all()  # jobs queued for a cluster that comes back run, with no submitter alive
    watchdog.run_forever(store, stop, interval)
    click.echo("watchdog stopped")


def _send_mail_once(store: Store) -> None:
    from .services import mail

    settings = connections.settings()
    if settings.smtp_host:
        sent = mail.send_pending(store, settings)
        if sent:
            click.echo(f"sent {sent} mail(s)")


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: also when started in the background, where SIGINT arrives ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


@main.command("down")
def down_command() -> None:
    """Stop the local runtime (its Redis and cluster)."""
    settings = connections.settings()
    stopped = runtime.stop(Path(settings.state_dir))
    click.echo("local runtime stopped" if stopped else "local runtime was not running")


@main.command("server")
@click.option("--port", default=8888, show_default=True, type=int, help="The port to serve on.")
@click.option("--address", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--insecure-dev-login-anywhere",
    is_flag=True,
    help="Serve the development login (anyone logs in as anyone) on a non-loopback address too.",
)
def server_command(port: int, address: str, insecure_dev_login_anywhere: bool) -> None:
    """Serve each user's live job list (development login at /login: anyone can log in as anyone)."""
    import asyncio

    from .errors import NotLoopback
    from .server import is_loopback, serve

    if not (insecure_dev_login_anywhere or is_loopback(address)):
        raise click.ClickException(str(NotLoopback(address)))  # before the runtime starts for nothing
    connections.redis_url()  # start (or find) the runtime first

    def ready(url: str) -> None:
        click.echo(f"moi server: {url} (Ctrl-C stops it)")

    try:
        asyncio.run(serve(port, address, ready, dev_login_anywhere=insecure_dev_login_anywhere))
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
