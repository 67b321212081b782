"""Submitting jobs, and running them on an engine with their state in Redis.

On the submitting side, ``submit`` stores the job as ``Queued`` and hands it
to the cluster. On the engine, ``run_job`` marks it ``Running``, calls the
function with a ``status_update`` callable, and records ``Success`` with the
return value or ``Failed`` with the traceback. The engine needs no moi
configuration: the ``JobSpec`` it receives says which Redis to write to.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import arguments, connections, engine, queue, values
from . import files as job_files
from . import pause as pausing
from .batch import Batch as Batch  # batches (parameter sweeps) are part of this API
from .batch import submit_many as submit_many
from .commands import check_code as check_code  # what the CLI runs, under the seed's names
from .commands import function_source as function_source
from .commands import python_exec as python_exec
from .commands import system_call as system_call
from .compat import ctxs as ctxs  # the original's names: ctxs here, ctx_default by __getattr__
from .config import ContextSpec
from .context import Context, by_name
from .errors import (
    BadDocument,
    CodeFailed,
    FetchFailed,
    JobCancelled,
    MoveFailed,
    RedisUnavailable,
    StepFailed,
    UnknownId,
    WrongState,
)
from .handle import JobHandle
from .info import Info, Status, encode_result, is_finished, new_id, new_info, now
from .pause import Scope
from .store import Store, reaching

log = logging.getLogger("moi.job")

NO_USER_GROUP = "no-user"


def __getattr__(name: str) -> Any:
    if name == "ctx_default":  # read when asked for: the settings may change after import
        return connections.settings().default_context
    raise AttributeError(f"module 'moi.job' has no attribute {name!r}")


# submitting --------------------------------------------------------------


Chooser = Callable[[str, str, tuple[Any, ...], dict[str, Any]], str]


def submit(
    ctx: str | Context | Chooser | None,
    group: str,
    name: str,
    url: str | None,
    func: Callable[..., Any],
    *args: Any,
    priority: str | int | None = None,
    files: job_files.Inputs | None = None,
    workdir: bool = False,
    resources: Mapping[str, str] | None = None,
    outputs: str | None = None,
    **kwargs: Any,
) -> tuple[str, str, JobHandle]:
    """Queue ``func(*args, **kwargs)`` as a job under ``group``, to run on the context's cluster.

    ``ctx`` is a context name or Context; or a chooser, ``chooser(name, user, args, kwargs)``
    returning a context name; None uses the configured chooser (``[moi] chooser``), else the
    default context. ``group`` is a user name (its group is created on first use) or a group id.
    ``priority``: ``low``, ``normal`` (the default), ``high`` or an integer; a
    higher one starts first when every engine is busy. ``files``: inputs copied into
    the job's own directory (paths, or names mapped to paths, bytes or binary files);
    ``workdir=True`` gives it a directory without inputs; an input given as a URI is
    fetched on the engine; ``resources`` (names mapped to URIs) are fetched once per
    host and shared; ``outputs`` (a URI) receives ``output/`` after a success (see ``moi.files``).
    Returns ``(job_id, group_id, handle)`` at once. The job is stored as Queued,
    with its call, in moi's queue and announced before this returns; the cluster need not be up.
    """
    spec = context_for(ctx, name, group, args, kwargs)
    placed = Placed(files, workdir, resources, outputs)
    return queue_job(spec, group, name, url, func, args, kwargs, queue.priority_of(priority), placed)


@dataclass(frozen=True)
class Placed:
    """What a job's directory gets: inputs, resources by URI, where output/ goes (see ``submit``)."""

    files: job_files.Inputs | None = None
    workdir: bool = False
    resources: Mapping[str, str] | None = None
    outputs: str | None = None
    root: str | None = None  # where the directory is made (a service's incoming root); None: the jobs root
    origin: str = "local"  # who names the inputs: "local" (library, CLI) or "web" (see moi.input_policy)

    @property
    def wanted(self) -> bool:
        return self.files is not None or self.workdir or bool(self.resources) or bool(self.outputs)


def queue_job(
    spec: ContextSpec,
    group: str,
    name: str,
    url: str | None,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    level: int,
    placed: Placed,
    fields: Mapping[str, Any] | None = None,
) -> tuple[str, str, JobHandle]:
    """``submit`` once its context and priority are known; ``fields``: more of the info (a service's)."""
    _check_fields(name, url, fields)
    store = connections.store()
    job_id = new_id()
    info = new_info(job_id, name, "job", store.keys.channel(job_id), url=url, context=spec.name)
    info["priority"] = level
    info.update(fields or {})
    origin: tuple[Any, ...] = engine.submitted_from()
    directory = ""
    if placed.wanted:
        directory, transfers = job_files.prepare(
            job_id, placed.files, placed.resources, placed.outputs, placed.root, placed.origin
        )
        origin += (directory, transfers)
        info["files"] = job_files.summary(directory)
        if placed.root:
            info["directory"] = directory  # not under the jobs root: its info says where
    call = queue.pack_call(by_name(func), args, kwargs, origin)
    try:
        group_id, _ = connections.queue().enqueue(group, spec.name, [(info, call, level)], connections.limits())
    except BaseException:
        if directory:  # nothing of a refused job stays behind
            job_files.remove_directory(directory)
        raise
    connections.dispatcher(spec)  # someone must dispatch: this process, unless another leads
    log.debug("queued %s for %s", job_id, spec.name)
    return job_id, group_id, JobHandle(job_id, store)


def _check_fields(name: str, url: str | None, fields: Mapping[str, Any] | None = None) -> None:
    """InvalidValue for what would stall Redis's Lua once stored (see ``moi.values``): a name or URL
    that is not one line of text, or a service's field (params, email) that JSON and Lua cannot hold."""
    values.check_line(name, "the job's name")
    values.check_line(url, "the job's url")
    if fields:
        values.check(dict(fields), "the job")


def context_for(
    ctx: str | Context | Chooser | None, name: str, group: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> ContextSpec:
    """The context a job goes to: ``ctx`` as ``submit`` reads it (a name, a Context, a chooser, or None)."""
    if isinstance(ctx, Context):
        return ctx.spec
    if isinstance(ctx, str):
        return connections.context_spec(ctx)
    chooser = ctx if ctx is not None else connections.chooser()
    if chooser is None:
        return connections.context_spec(connections.settings().default_context)
    return connections.context_spec(chooser(name, group, args, kwargs))


def relaunch(job_id: str, store: Store | None = None, web_grant: bool | None = None) -> tuple[str, str, JobHandle]:
    """Queue a finished job again, with the same function and arguments, as a new job beside it.

    The new job carries ``relaunch_of``; the old one is kept. WrongState for a job that has not
    finished, or whose call is not kept (a batch item; or expired); UnknownId for an unknown id.
    ``web_grant``: None for a local caller (library, CLI); for a web user, whether they hold the grant
    to run code: code is run again only as ``moi.sandbox.check_relaunch`` allows (CodeRefused).
    """
    from .sandbox import check_relaunch

    store = store or connections.store()
    old = store.get(job_id)
    if old["type"] != "job":
        raise WrongState(job_id, "relaunched", "it is a group")
    if not is_finished(old):
        raise WrongState(job_id, "relaunched", f"it is still {old['status']}; wait for it or cancel it first")
    jobs = queue.Queue(store)
    call = jobs.call_of(job_id)
    if call is None:
        raise WrongState(job_id, "relaunched", "its call is not kept (a batch item, or it expired)")
    check_relaunch(old, call, web_grant)
    context = str(old.get("context"))
    _check_fields(old["name"], old.get("url"))  # one stored before these were checked: refused, not stuck
    new = new_info(new_id(), old["name"], "job", store.keys.channel(""), url=old.get("url"), context=context)
    new.update(pubsub=store.keys.channel(new["id"]), priority=old.get("priority", 0), relaunch_of=job_id)
    if "sandbox" in old:  # code a web user ran (see moi.sandbox): it runs again as it did
        new["sandbox"] = old["sandbox"]
    group_id, _ = jobs.enqueue(old["parent"], context, [(new, call, new["priority"])], connections.limits())
    connections.dispatcher(connections.context_spec(context))
    return new["id"], group_id, JobHandle(new["id"], store)


def pause(
    *, context: str | None = None, user: str | None = None, group: str | None = None, job_id: str | None = None
) -> list[str]:
    """Pause the queued jobs of a context, a user, a group (nested groups too) or one job, and
    every job submitted there until ``resume``; running jobs finish. The ids of the jobs held."""
    store = connections.store()
    return pausing.pause(store, _scope(store, context, user, group, job_id))


def resume(
    *, context: str | None = None, user: str | None = None, group: str | None = None, job_id: str | None = None
) -> list[str]:
    """Undo ``pause``: the held jobs go back to their queue, in their old order. The ids queued again."""
    store = connections.store()
    return pausing.resume(store, _scope(store, context, user, group, job_id))


def _scope(store: Store, context: str | None, user: str | None, group: str | None, job_id: str | None) -> Scope:
    given = [(kind, value) for kind, value in (("context", context), ("user", user), ("group", group), ("job", job_id))]
    chosen = [(kind, value) for kind, value in given if value is not None]
    if len(chosen) != 1:
        raise ValueError("give exactly one of context, user, group or job_id")
    kind, value = chosen[0]
    if kind == "context":
        connections.context_spec(value)  # UnknownContext for a name that is not configured
        return Scope("context", value)
    if kind == "user":
        return pausing.user_scope(store, value)
    return Scope(kind, value)


def submit_nouser(func: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, str, JobHandle]:
    """Submit to the default context, into the no-user group."""
    ctx = connections.settings().default_context
    return submit(ctx, NO_USER_GROUP, NO_USER_GROUP, None, func, *args, **kwargs)


def create_group(name: str, parent: str | None = None) -> str:
    """A new group, top-level or nested under ``parent`` (a user name or group id)."""
    values.check_line(name, "the group's name")
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
        # Out of its queue (or held set) in the same atomic write: no engine can take it. A queued job
        # an engine has taken already (a batch item it is about to start) is asked of that engine instead.
        context = str(info.get("context"))
        leave = [
            ["ZREM", store.keys.queue(context), job_id],
            ["ZREM", store.keys.held(context), job_id],
        ]
        info = store.update(job_id, change, info, also=leave, unless_in=store.keys.running)
    except UnknownId:
        return  # removed meanwhile: nothing left to cancel
    if wrote == [True] and info["status"] == Status.CANCELLED:
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
    if info["status"] not in (Status.QUEUED, Status.PAUSED):
        return None
    info.update(status=Status.CANCELLED, result=_CANCELLED_QUEUED, result_format="text", date_end=now())
    return info


# on the engine -----------------------------------------------------------


def run_started(
    store: Store,
    liveness: engine.Liveness,
    info: Info,
    origin: tuple[str, str] | None,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call a job already marked Running (its heartbeat registered), and record how it ended."""
    workdir = engine.workdir_of(origin)
    tracker = _Tracker(store, info["id"], info, also_at_end=liveness.unregistering(), workdir=workdir)
    tracker.transfers = origin[3] if origin and len(origin) > 3 else {}
    if workdir and not os.path.isdir(workdir):  # a jobs root this host does not share
        tracker.finish(Status.FAILED, job_files.unseen(workdir, liveness.label), "text")
        return None
    liveness.start()
    try:
        with engine.in_directory(origin), job_files.job_environment(workdir), engine.running(store, info):
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
            if tracker.workdir:  # inputs and resources by URI come first: the function needs them
                job_files.bring_in(tracker.workdir, tracker.transfers)
            takes = arguments.accepted(func)
            moi_names = arguments.moi_kwargs(takes, tracker.status_update, tracker.info, tracker.workdir)
            result = func(*args, **{**kwargs, **moi_names})
            if tracker.workdir:
                _send_out(tracker)
    except BaseException as error:  # KeyboardInterrupt or SystemExit must not leave it Running either
        if liveness.cancel_requested:
            tracker.finish(Status.CANCELLED, "Cancelled while running", "text")
            raise JobCancelled(f"Job {tracker.job_id} was cancelled") from None
        if isinstance(error, FetchFailed | StepFailed | MoveFailed):  # its reason says it all: no moi traceback
            tracker.finish(Status.FAILED, str(error), "text")
            raise
        if isinstance(error, CodeFailed):  # the sandboxed child's own traceback, or why it gave none
            tracker.finish(Status.FAILED, str(error), error.result_format)
            raise
        tracker.finish(Status.FAILED, traceback.format_exc(), "traceback", pickled(error))
        raise
    value, result_format = encode_result(result)
    # A value JSON cannot hold is kept pickled too, so a handle's get() returns the object itself.
    tracker.finish(Status.SUCCESS, value, result_format, pickled(result) if result_format == "repr" else None)
    return result


def _send_out(tracker: _Tracker) -> None:
    try:
        job_files.send_out(tracker.workdir, tracker.transfers)
    except FetchFailed as error:
        raise FetchFailed(error.uri, f"the job ran, but its outputs were not sent there: {error}") from None


def pickled(value: Any) -> str | None:
    """``value`` pickled as text for Redis, or None when it cannot be pickled."""
    try:
        return base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode()
    except Exception:  # an unpicklable value (a lock, a generator) is kept only as its repr
        return None


def fail_unloadable(store: Store, liveness: engine.Liveness, info: Info, error: BaseException) -> None:
    """A job taken from the queue whose call this engine cannot load: Failed, saying why."""
    tracker = _Tracker(store, info["id"], info, also_at_end=liveness.unregistering())
    reason = f"Never started: engine {liveness.label} could not load the job's function: {error!r}"
    tracker.finish(Status.FAILED, reason, "text")


def _starter(label: str) -> Callable[[Info], Info | None]:
    def start(info: Info) -> Info | None:
        if info["status"] != Status.QUEUED:
            return None
        info.update(status=Status.RUNNING, date_start=now(), engine=label)
        return info

    return start


class _Tracker:
    """Keeps the engine's latest copy, so each change is usually one round trip."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        info: Info,
        also_at_end: list[list[str | int]] | None = None,
        workdir: str = "",
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.info = info
        self.also_at_end = also_at_end or []  # commands that go with the final write
        self.workdir = workdir  # the job's directory: its final write says what it holds
        self.transfers: Mapping[str, Any] = {}  # what the engine fetches into it, and where output/ goes
        self.ended = False  # the final write was ours, and carried also_at_end

    def status_update(self, text: str) -> None:
        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None  # a late status text never reopens a finished job
            info["status"] = values.mended(str(text))  # a lone surrogate would make it unreadable to Redis's Lua
            return info

        try:
            self.info = self.store.update(self.job_id, change, self.info)
        except RedisUnavailable as error:
            # A status text is a progress note: losing one must not fail the job.
            log.warning("job %s: status %r not recorded: %s", self.job_id, text, error)

    def finish(self, status: Status, result: Any, result_format: str, value: str | None = None) -> None:
        """The final state; ``value``: the pickled return value or exception, kept beside the info."""
        wrote: list[bool] = []
        also = list(self.also_at_end)
        if value is not None:
            also.append(["SET", self.store.keys.value(self.job_id), value, "EX", self.store.ttl])
        held = job_files.held(self.workdir)  # never raises: nothing may keep the final write from landing

        def change(info: Info) -> Info | None:
            wrote[:] = [not is_finished(info)]  # the last attempt is the one that counted
            if is_finished(info):
                return None
            info.update(status=status, result=result, result_format=result_format, date_end=now())
            if held is not None:
                info["files"] = held
            return info

        # The final state must land even across a Redis outage (bounded: then it is logged).
        self.info = engine.retrying(
            lambda: self.store.update(self.job_id, change, self.info, also=also),
            f"recording job {self.job_id} {status}",
        )
        self.ended = wrote == [True]
