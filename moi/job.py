"""Submitting jobs, and running them on an engine with their state in Redis.

On the submitting side, ``submit`` stores the job as ``Queued`` and hands it
to the cluster. On the engine, ``run_job`` marks it ``Running``, calls the
function with a ``status_update`` callable, and records ``Success`` with the
return value or ``Failed`` with the traceback. The engine needs no moi
configuration: the ``JobSpec`` it receives says which Redis to write to.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import arguments, connections, engine
from .batch import Batch as Batch  # batches (parameter sweeps) are part of this API
from .batch import submit_many as submit_many
from .compat import ctxs as ctxs  # the original's names: ctxs here, ctx_default by __getattr__
from .context import ByName, Context, by_name
from .errors import BadDocument, CommandFailed, InvalidCode, JobCancelled, MoiError, RedisUnavailable, UnknownId
from .info import Info, Status, encode_result, is_finished, new_id, new_info, now
from .store import Store, reaching, store_for

log = logging.getLogger("moi.job")

NO_USER_GROUP = "no-user"
_CODE_FILENAME = "<moi-cmd>"
KILL_AFTER = 3.0  # seconds a cancelled shell command gets between SIGTERM and SIGKILL


@dataclass(frozen=True)
class JobSpec:
    """What an engine needs to record a job's state: sent along with the job."""

    job_id: str
    redis_url: str
    key_prefix: str
    ttl: int
    info: Info | None = None  # as stored at submission: the engine's first write needs no read
    origin: tuple[str, str] | None = None  # (host, directory) it was submitted from: it runs there

    def store(self) -> Store:
        return store_for(self.redis_url, self.key_prefix, self.ttl)


def __getattr__(name: str) -> Any:
    if name == "ctx_default":  # read when asked for: the settings may change after import
        return connections.settings().default_context
    raise AttributeError(f"module 'moi.job' has no attribute {name!r}")


# submitting --------------------------------------------------------------


def submit(
    ctx: str | Context,
    group: str,
    name: str,
    url: str | None,
    func: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> tuple[str, str, Any]:
    """Run ``func(*args, **kwargs)`` on the cluster as a job under ``group``.

    ``group`` is a user name (its group is created on first use) or a group id.
    Returns ``(job_id, group_id, handle)`` at once; ``handle`` is the
    ipyparallel AsyncResult. The job is stored as Queued and announced
    before this returns.
    """
    context = connections.get_context(ctx)
    view = context.view  # connect first: an unreachable cluster writes nothing
    store = connections.store()
    job_id = new_id()
    info = new_info(job_id, name, "job", store.keys.channel(job_id), url=url, context=context.name)
    # Stored, announced and in the queued index (for the watchdog) in one round trip.
    group_id = store.add_queued(group, [info], context.queued_entry())
    spec = JobSpec(job_id, store.url, store.keys.prefix, store.ttl, info, engine.submitted_from())
    handle = view.apply_async(ByName(run_job), spec, by_name(func), args, kwargs)
    handle.add_done_callback(functools.partial(_fail_if_never_started, store, job_id))
    context.deliver_before_exit()
    log.debug("submitted %s to %s", job_id, context.name)
    return job_id, group_id, handle


def _fail_if_never_started(store: Store, job_id: str, handle: Any) -> None:
    """A task the cluster failed before run_job ran (a function the engine cannot load) must not stay Queued."""
    error = handle.exception()
    if error is None:
        return

    def change(info: Info) -> Info | None:
        if info["status"] != Status.QUEUED:
            return None  # run_job ran and recorded the outcome itself
        info.update(status=Status.FAILED, result=f"Never started: {error}", result_format="text", date_end=now())
        return info

    try:
        store.update(job_id, change)
    except MoiError as failure:  # runs in ipyparallel's IO thread: log, never raise there
        log.warning("job %s never started (%s) and could not be marked Failed: %s", job_id, error, failure)


def submit_nouser(func: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, str, Any]:
    """Submit to the default context, into the no-user group."""
    ctx = connections.settings().default_context
    return submit(ctx, NO_USER_GROUP, NO_USER_GROUP, None, func, *args, **kwargs)


def create_group(name: str, parent: str | None = None) -> str:
    """A new group, top-level or nested under ``parent`` (a user name or group id)."""
    store = connections.store()
    parent_id = store.ensure_group(parent) if parent is not None else None
    return store.create_group(name, parent_id)


def get_info(job_id: str) -> Info:
    return connections.store().get(job_id)


# cancelling ----------------------------------------------------------------


@dataclass
class CancelReport:
    """What ``cancel`` did, job by job."""

    cancelled: list[str] = field(default_factory=list)  # were queued: Cancelled now, never run
    requested: list[str] = field(default_factory=list)  # running: their engine interrupts them
    finished: list[str] = field(default_factory=list)  # already finished: nothing changed
    bad: list[BadDocument] = field(default_factory=list)  # keys under the group that hold no info object

    def summary(self, node_id: str) -> str:
        """One line for a user."""
        if not (self.cancelled or self.requested):
            if len(self.finished) == 1 and self.finished[0] == node_id:
                return f"Job {node_id} has already finished; nothing to cancel"
            if not self.finished:
                return f"Nothing to cancel in {node_id}: it holds no jobs"
            return f"Nothing to cancel in {node_id}: all {len(self.finished)} jobs have finished"
        parts = []
        if self.cancelled:
            parts.append(f"{len(self.cancelled)} queued job(s) cancelled")
        if self.requested:
            parts.append(f"{len(self.requested)} running job(s) being interrupted")
        if self.finished:
            parts.append(f"{len(self.finished)} already finished")
        return f"Cancel {node_id}: " + ", ".join(parts)


def cancel(node_id: str, store: Store | None = None) -> CancelReport:
    """Cancel a job, or every unfinished job under a group.

    A queued job is marked Cancelled at once and never runs; a running job's
    engine interrupts it (a shell command's process group is terminated) and
    records Cancelled within a few seconds. Finished jobs are left as they are.
    Raises UnknownId for an id that names nothing.
    """
    store = store or connections.store()
    info = store.get(node_id)
    report = CancelReport()
    jobs = store.descendant_jobs(node_id, report.bad) if info.get("type") == "group" else [info]
    for job in jobs:
        _cancel_job(store, job, report)
    return report


def _cancel_job(store: Store, info: Info, report: CancelReport) -> None:
    job_id = info["id"]
    wrote: list[bool] = []

    def change(current: Info) -> Info | None:
        new = _cancel_if_queued(current)
        wrote[:] = [new is not None]  # the last attempt is the one that counted
        return new

    try:
        # Out of the queued index in the same atomic write: the watchdog has nothing left to watch.
        info = store.update(job_id, change, info, also=[["HDEL", store.keys.queued, job_id]])
    except UnknownId:
        return  # removed meanwhile: nothing left to cancel
    if wrote == [True]:
        report.cancelled.append(job_id)
    elif is_finished(info):
        report.finished.append(job_id)
    else:
        with reaching(store.url):
            store.redis.set(store.keys.cancel(job_id), "1", ex=store.ttl)
        report.requested.append(job_id)


_CANCELLED_QUEUED = "Cancelled before it started"


def _cancel_if_queued(info: Info) -> Info | None:
    # The compare-and-set decides the race with an engine starting the job:
    # whichever writes first wins, and run_job never runs a job not Queued.
    if info["status"] != Status.QUEUED:
        return None
    info.update(status=Status.CANCELLED, result=_CANCELLED_QUEUED, result_format="text", date_end=now())
    return info


# on the engine -----------------------------------------------------------


def run_job(spec: JobSpec, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The engine side of a job: Running, the call, then Success, Failed or Cancelled.

    The heartbeat is set by the same atomic write that shows the job Running,
    so a watchdog can tell a running job from one whose engine died.
    """
    store = spec.store()
    liveness = engine.Liveness(store, spec.job_id)
    start = _starter(liveness.label)
    # Running, the heartbeat and the running index are one atomic write (one round trip).
    registering = liveness.registering()
    info = engine.retrying(
        lambda: store.update(spec.job_id, start, spec.info, also=registering), f"starting job {spec.job_id}"
    )
    if info["status"] != Status.RUNNING:
        return None  # cancelled (or otherwise finished) before it started
    tracker = _Tracker(store, spec.job_id, info, also_at_end=liveness.unregistering())
    liveness.start()
    try:
        with engine.in_directory(spec.origin):
            return _call(tracker, liveness, func, args, kwargs)
    finally:
        liveness.stop(unregistered=tracker.ended)


def _call(
    tracker: _Tracker,
    liveness: engine.Liveness,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    try:
        with liveness.interruptible():
            moi_names = arguments.moi_kwargs(arguments.accepted(func), tracker.status_update, tracker.info)
            result = func(*args, **{**kwargs, **moi_names})
    except BaseException:  # KeyboardInterrupt or SystemExit must not leave it Running either
        if liveness.cancel_requested:
            tracker.finish(Status.CANCELLED, "Cancelled while running", "text")
            raise JobCancelled(f"Job {tracker.job_id} was cancelled") from None
        tracker.finish(Status.FAILED, traceback.format_exc(), "traceback")
        raise
    value, result_format = encode_result(result)
    tracker.finish(Status.SUCCESS, value, result_format)
    return result


def _starter(label: str) -> Callable[[Info], Info | None]:
    def start(info: Info) -> Info | None:
        if info["status"] != Status.QUEUED:
            return None
        info.update(status=Status.RUNNING, date_start=now(), engine=label)
        return info

    return start


class _Tracker:
    """Keeps the engine's latest copy, so each change is usually one round trip."""

    def __init__(self, store: Store, job_id: str, info: Info, also_at_end: list[list[str | int]] | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self.info = info
        self.also_at_end = also_at_end or []  # commands that go with the final write
        self.ended = False  # the final write was ours, and carried also_at_end

    def status_update(self, text: str) -> None:
        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None  # a late status text never reopens a finished job
            info["status"] = str(text)
            return info

        try:
            self.info = self.store.update(self.job_id, change, self.info)
        except RedisUnavailable as error:
            # A status text is a progress note: losing one must not fail the job.
            log.warning("job %s: status %r not recorded: %s", self.job_id, text, error)

    def finish(self, status: Status, result: Any, result_format: str) -> None:
        wrote: list[bool] = []

        def change(info: Info) -> Info | None:
            wrote[:] = [not is_finished(info)]  # the last attempt is the one that counted
            if is_finished(info):
                return None
            info.update(status=status, result=result, result_format=result_format, date_end=now())
            return info

        # The final state must land even across a Redis outage (bounded: then it is logged).
        self.info = engine.retrying(
            lambda: self.store.update(self.job_id, change, self.info, also=self.also_at_end),
            f"recording job {self.job_id} {status}",
        )
        self.ended = wrote == [True]


# what the CLI runs ------------------------------------------------------


def system_call(cmd: str, **kwargs: Any) -> list[Any]:
    """Run a shell command; ``[stdout, stderr, returncode]``, or CommandFailed.

    The command runs in its own process group; if the call is interrupted
    (the job is cancelled), the whole group gets SIGTERM, then SIGKILL.
    """
    with subprocess.Popen(
        cmd,
        shell=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            with engine.shielded():
                _end_process_group(proc)
            raise
    if proc.returncode != 0:
        raise CommandFailed(cmd, stdout, stderr, proc.returncode)
    return [stdout, stderr, proc.returncode]


def _end_process_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the command's whole process group; SIGKILL for whatever ignores it."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_AFTER)
    except subprocess.TimeoutExpired:
        log.info("command %d ignored SIGTERM; killing its process group", proc.pid)
    _signal_group(proc.pid, signal.SIGKILL)  # children may outlive the shell
    proc.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has already gone
        os.killpg(pgid, signum)


def function_source(code: str) -> str:
    """Code as the body of a function, so ``return x`` sets the result."""
    body = textwrap.indent(textwrap.dedent(code), "    ") or "    pass"
    return f"def moi_cmd(**kwargs):\n{body}\n"


def check_code(code: str) -> None:
    try:
        compile(function_source(code), _CODE_FILENAME, "exec")
    except SyntaxError as error:
        line = (error.lineno or 2) - 1  # the first line is our def
        raise InvalidCode(f"Python code does not compile: {error.msg} (line {line})") from None
    except (MemoryError, RecursionError):  # the parser's own limits: 10,000 minus signs in a row
        raise InvalidCode("Python code does not compile: it is nested too deeply for the parser") from None


def python_exec(code: str, **kwargs: Any) -> Any:
    """Run code given as text (``moi submit --cmd``) as the body of a function."""
    namespace: dict[str, Any] = {}
    exec(compile(function_source(code), _CODE_FILENAME, "exec"), namespace)
    return namespace["moi_cmd"](**kwargs)
