"""``moi status``, ``watchdog``, ``down`` and ``server``: running moi, and what runs where."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import click

from moi.compute import watchdog
from moi.core.config import Settings
from moi.core.errors import NotLoopback
from moi.core.redact import masked_url, printable
from moi.jobs import connections, scheduler_seen
from moi.services import mail, unloadable
from moi.storage import loops, runtime
from moi.storage.redis_errors import reaching
from moi.storage.store import Store
from moi.upkeep import passes


@click.command("status")
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
    for line in _configured_contexts(settings):
        click.echo(line)
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
    for service in unloadable.read(store):
        click.echo(service.line())


def _configured_contexts(settings: Settings) -> list[str]:
    """``configured context: NAME -> its cluster file``, or its batch scheduler and where that runs."""
    lines = []
    for spec in settings.contexts.values():
        target = spec.url_file or ":".join(filter(None, [spec.profile, spec.cluster_id]))
        lines.append(f"configured context: {spec.name} -> {target}")
    for name, scheduler in settings.schedulers.items():
        lines.append(f"configured context: {name} -> {scheduler.kind} scheduler on {scheduler.where}")
    return lines


def _loop_lines(store: Store) -> list[str]:
    """``loop NAME: N failed items, M restarts; last at TIME: LINE`` for each loop that failed."""
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
    seen = scheduler_seen.read(store, connections.context_specs()[name])  # context_spec could start a runtime
    if seen is not None:  # a scheduler context: its poller's last sight
        return scheduler_seen.line(name, seen, depth)
    if note is not None:
        engines = json.loads(note).get("engines", "?")
        return f"context {name}: online, {engines} engines, {depth} queued"
    spec_file = (
        None if connections.settings().uses_embedded_cluster else connections.context_spec(name).connection_file()
    )
    reachable = spec_file is not None and watchdog.controller_listening(spec_file)
    state = "online (no dispatcher running)" if reachable else "offline"
    return f"context {name}: {state}, {depth} queued"


@click.command("watchdog")
@click.option(
    "--once",
    is_flag=True,
    help="One pass that fails stranded jobs at once, queues due retries and sweeps gone jobs' files, then exit.",
)
@click.option("--interval", type=float, default=watchdog.INTERVAL, show_default=True, help="Seconds between passes.")
def watchdog_command(once: bool, interval: float) -> None:
    """Fail jobs whose engine died, and dispatch every context's queue (for clusters moi did not start)."""
    store = connections.store()
    if once:
        # No second look here, so no grace: only for a cluster known to be down.
        for job_id in watchdog.Watchdog(store, grace=0).check():
            click.echo(f"failed stranded job {job_id}")
        for job_id in passes.sweep_logging(store):
            click.echo(f"removed the files of gone job {job_id}")
        due = passes.retries_logging(store)
        if due:
            click.echo(f"queued {due} job(s) due for their next attempt")
        moved = passes.retention_logging(store)
        for job_id in moved:
            click.echo(f"moved service job {job_id} on by its retention")
        if moved or due:  # jobs queued now: leave work for them with the controller at exit, as a submitter does
            connections.dispatch_all()
        _send_mail_once(store)
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    click.echo(f"watching jobs in {masked_url(store.url)} every {interval:g}s; Ctrl-C or SIGTERM stops")
    connections.dispatch_all()  # jobs queued for a cluster that comes back run, with no submitter alive
    passes.run_forever(store, stop, interval)
    click.echo("watchdog stopped")


def _send_mail_once(store: Store) -> None:
    settings = connections.settings()
    if settings.smtp_host:
        sent = mail.send_pending(store, settings)
        if sent:
            click.echo(f"sent {sent} mail(s)")


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: also when started in the background, where SIGINT arrives ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: _set_from_a_thread(stop))


def _set_from_a_thread(stop: threading.Event) -> None:
    # Not stop.set() in the handler: the handler runs in the main thread, which may hold the event's own
    # lock inside stop.wait(); setting it there would wait on that lock for ever (the watchdog never stopped).
    threading.Thread(target=stop.set, name="moi-stop", daemon=True).start()


@click.command("down")
def down_command() -> None:
    """Stop the local runtime (its Redis and cluster)."""
    settings = connections.settings()
    stopped = runtime.stop(Path(settings.state_dir))
    click.echo("local runtime stopped" if stopped else "local runtime was not running")


@click.command("server")
@click.option("--port", default=8888, show_default=True, type=int, help="The port to serve on.")
@click.option("--address", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--insecure-dev-login-anywhere",
    is_flag=True,
    help="Serve the development login (anyone logs in as anyone) on a non-loopback address too "
    "(not needed with [server] logins = password).",
)
def server_command(port: int, address: str, insecure_dev_login_anywhere: bool) -> None:
    """Serve each user's live job list (development login at /login: anyone can log in as anyone)."""
    from moi.web.server import bind_allowed, serve  # here, not above: the CLI starts without Tornado and the API

    if not bind_allowed(address, insecure_dev_login_anywhere):
        raise click.ClickException(str(NotLoopback(address)))  # before the runtime starts for nothing
    connections.redis_url()  # start (or find) the runtime first

    def ready(url: str) -> None:
        click.echo(f"moi server: {url} (Ctrl-C stops it)")

    try:
        asyncio.run(serve(port, address, ready, dev_login_anywhere=insecure_dev_login_anywhere))
    except OSError as error:
        raise click.ClickException(f"cannot serve on {address}:{port}: {error.strerror or error}") from None
