"""Submitting jobs from Python: ``submit``, and what acts on queued jobs (relaunch, pause, resume).

``submit`` stores the job as ``Queued``, with its call, in its context's queue (one atomic step,
``moi.queue.jobqueue``) and makes sure a dispatcher runs for the context (``moi.jobs.connections``);
an engine then takes it (``moi.compute.worker``) and runs it (``moi.compute.running``), writing its
state to the Redis its work spec names. Cancelling is ``moi.jobs.cancel``; batches ``moi.jobs.batch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from moi.compute import engine
from moi.compute.context import Context, by_name
from moi.compute.sandbox import run_code
from moi.compute.text_jobs import python_exec, system_call
from moi.core import resources as job_resources
from moi.core import values
from moi.core.config import ContextSpec
from moi.core.errors import CodeRefused, UnknownId, WrongState
from moi.core.info import Info, is_finished, new_id, new_info
from moi.core.policy import Policy
from moi.jobfiles.input_policy import LOCAL, WEB
from moi.jobfiles.inputs import Inputs, prepare
from moi.jobfiles.reading import summary
from moi.jobfiles.removal import remove_directory
from moi.jobs import connections, job_policy, ran
from moi.jobs.grant import SANDBOX_FIELD, Place, check_relaunch, is_code
from moi.queue import jobqueue as queue
from moi.queue import pause as pausing
from moi.queue.job_handle import JobHandle
from moi.queue.jobqueue import Limits
from moi.queue.pause import Scope
from moi.storage.store import Store

log = logging.getLogger("moi.job")

NO_USER_GROUP = "no-user"
KEPT_RELAUNCHES = 20  # a job's newest relaunches it links to; relaunch_count counts them all
CMD_TYPE_FIELD = "cmd_type"  # what ran: "python" or "system" (a shell command; from the web or system_call)
RAN_FIELD = "ran"  # what the job runs, bounded and redacted, for its page (see moi.jobs.ran)


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
    files: Inputs | None = None,
    workdir: bool = False,
    resources: Mapping[str, str] | None = None,
    outputs: str | None = None,
    time_limit: str | float | None = None,
    soft_time_limit: str | float | None = None,
    retries: int | None = None,
    retry_on: Any = None,
    backoff: Any = None,
    idempotent: bool | None = None,
    **kwargs: Any,
) -> tuple[str, str, JobHandle]:
    """Queue ``func(*args, **kwargs)`` as a job under ``group``, to run on the context's cluster.

    ``ctx`` is a context name or Context; or a chooser, ``chooser(name, user, args, kwargs)`` returning a context
    name; None uses ``[moi] chooser``, else the default context. ``group``: a user name or a group id.
    ``priority``: ``low``, ``normal`` (the default), ``high`` or an integer; a higher one starts first when
    every engine is busy. ``files``: inputs copied into the job's own directory (paths, or names mapped to
    paths, bytes or binary files); ``workdir=True`` gives it a directory without inputs; an input given as a
    URI is fetched on the engine; ``resources``: shared files (names mapped to URIs, fetched once per host),
    and what a scheduler context's job asks of its batch scheduler (``cores``, ``memory``: moi.core.resources);
    ``outputs`` (a URI) receives ``output/`` after a success (see ``moi.jobfiles.on_engine``).
    ``time_limit`` (``90s``, ``15m``, ``2h``; the context's by default) ends the job, Failed; ``soft_time_limit``
    warns it first. ``retries``: more attempts for the failures ``retry_on`` names (exception classes or names,
    exit codes; any but a cancel by default), after ``backoff``; ``idempotent=True``: queued again after a lost
    engine (see ``moi.core.policy``). Returns ``(job_id, group_id, handle)`` at once: the job is stored Queued,
    with its call, and announced before this returns; the cluster need not be up.
    """
    spec = context_for(ctx, name, group, args, kwargs)
    policy = Policy(time_limit, soft_time_limit, retries, retry_on, backoff, idempotent)
    fields, placed = _checked_fields(policy, spec, resources, Placed(files, workdir, None, outputs))
    return queue_job(spec, group, name, url, func, args, kwargs, queue.priority_of(priority), placed, fields)


def _checked_fields(
    policy: Policy, spec: ContextSpec, resources: Mapping[str, Any] | None, placed: Placed
) -> tuple[dict[str, Any], Placed]:
    """A job's policy and scheduler resources as its info holds them (checked), and ``placed`` with its shared
    files by URI (the other names of ``resources``)."""
    fields = policy_fields(policy, spec)
    asked, shared_files = job_resources.split(resources)
    fields.update(job_policy.resource_fields(spec, asked, fields.get("time_limit")))
    return fields, replace(placed, resources=shared_files)


def policy_fields(policy: Policy, spec: ContextSpec, origin: str = LOCAL) -> dict[str, Any]:
    """A job's time limit and retries as its info holds them, checked (InvalidValue): retries at most
    ``[moi] max_retries``, the context's time limit its default (see ``moi.jobs.job_policy``)."""
    return job_policy.policy_fields(policy, spec.name, origin)


@dataclass(frozen=True)
class Placed:
    """What a job's directory gets: inputs, resources by URI, where output/ goes (see ``submit``)."""

    files: Inputs | None = None
    workdir: bool = False
    resources: Mapping[str, str] | None = None
    outputs: str | None = None
    root: str | None = None  # where the directory is made (a service's incoming root); None: the jobs root
    origin: str = "local"  # who names the inputs: "local" (library, CLI) or "web" (see moi.jobfiles.input_policy)

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
    limits: Limits | None = None,  # the owner's (anonymous jobs have their own); None: the configured ones
) -> tuple[str, str, JobHandle]:
    """``submit`` once its context and priority are known; ``fields``: more of the info (a service's)."""
    _check_fields(name, url, fields)
    store = connections.store()
    job_id = new_id()
    info = new_info(job_id, name, "job", store.keys.channel(job_id), url=url, context=spec.name)
    info.update(_fields_of(func, args, kwargs, fields), priority=level)
    origin: tuple[Any, ...] = engine.submitted_from()
    directory = ""
    if placed.wanted:
        directory, transfers = prepare(
            job_id, placed.files, placed.resources, placed.outputs, placed.root, placed.origin
        )
        origin += (directory, transfers)
        info["files"] = summary(directory)
        if placed.root:
            info["directory"] = directory  # not under the jobs root: its info says where
    call = queue.pack_call(by_name(func), args, kwargs, origin)
    try:
        entry = [(info, call, level)]
        group_id, _ = connections.queue().enqueue(group, spec.name, entry, limits or connections.limits())
    except BaseException:
        if directory:  # nothing of a refused job stays behind
            remove_directory(directory)
        raise
    connections.dispatcher(spec)  # someone must dispatch: this process, unless another leads
    log.debug("queued %s for %s", job_id, spec.name)
    return job_id, group_id, JobHandle(job_id, store)


def _fields_of(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], fields: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``fields``, with what the job runs (``ran``) unless they say it; and a shell command (``moi submit
    --cmd-type system``) says so: its page shows the result, ``[stdout, stderr, return code]``, as output."""
    given = dict(fields or {})
    given.setdefault(RAN_FIELD, _ran(func, args, kwargs))
    if func is system_call:
        given[CMD_TYPE_FIELD] = "system"
    return given


def _ran(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A command as a command (``moi submit --cmd``, ``system_call``), any other call as a function's."""
    kinds: dict[Callable[..., Any], str] = {system_call: "system", python_exec: "python"}
    if func in kinds and len(args) == 1 and isinstance(args[0], str) and not kwargs:
        return ran.command(kinds[func], args[0])
    return ran.function_call(func, args, kwargs)


def _check_fields(name: str, url: str | None, fields: Mapping[str, Any] | None = None) -> None:
    """InvalidValue for what would stall Redis's Lua once stored (see ``moi.core.values``): a name or URL
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
    to run code: code is run again only as ``moi.jobs.grant.check_relaunch`` allows (CodeRefused).
    """
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
    if is_code(old):  # its context may have become a scheduler context since it ran
        _no_code_on_scheduler(connections.context_spec(context))
    _check_fields(old["name"], old.get("url"))  # one stored before these were checked: refused, not stuck
    new = new_info(new_id(), old["name"], "job", store.keys.channel(""), url=old.get("url"), context=context)
    new.update(pubsub=store.keys.channel(new["id"]), priority=old.get("priority", 0), relaunch_of=job_id)
    new.update(job_policy.as_asked(old))  # its limits and retries, from its first attempt again
    kept = (SANDBOX_FIELD, CMD_TYPE_FIELD, RAN_FIELD)
    new.update({field: old[field] for field in kept if field in old})  # runs as it did, and says so
    group_id, _ = jobs.enqueue(old["parent"], context, [(new, call, new["priority"])], connections.limits())
    _note_relaunch(store, old, new["id"])
    connections.dispatcher(connections.context_spec(context))
    return new["id"], group_id, JobHandle(new["id"], store)


def _note_relaunch(store: Store, old: Info, relaunch_id: str) -> None:
    """The original names its relaunches (``relaunched_as``, the newest ``KEPT_RELAUNCHES``; ``relaunch_count``,
    all of them), for the pages that link both ways. Only a relaunch writes it, so an ordinary job pays nothing,
    and a job relaunched without end keeps a document of bounded size. Gone meanwhile: nothing to note."""

    def add(info: Info) -> Info:
        earlier = info.get("relaunched_as")
        kept = [*(earlier if isinstance(earlier, list) else []), relaunch_id][-KEPT_RELAUNCHES:]
        count = info.get("relaunch_count")
        count = count if isinstance(count, int) and not isinstance(count, bool) else len(kept) - 1
        return {**info, "relaunched_as": kept, "relaunch_count": count + 1}

    try:
        store.update(old["id"], add, known=old)
    except UnknownId:
        log.info("job %s was relaunched as %s, and is gone", old["id"], relaunch_id)


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


def submit_code(
    group: str,
    name: str,
    url: str | None,
    kind: str,
    cmd: str,
    place: Place,
    level: int,
    policy: Policy | None = None,
    resources: job_resources.Resources | None = None,
) -> tuple[str, str]:
    """Queue ``cmd`` to run at ``place``: the call says so, and the job's info too (``sandbox``: uid and
    network), which relaunch keeps and the API and websocket read to ask for the grant again.
    ``policy``: its time limit and retries, as a web user asked (nothing they name is imported);
    ``resources``: what it asks of its context's batch scheduler (checked: ``moi.core.resources.checked``)."""
    args = (kind, cmd, place.uid, place.python, place.network, place.processes)
    spec = context_for(None, name, group, args, {})
    _no_code_on_scheduler(spec)
    fields = policy_fields(policy or Policy(), spec, WEB)
    fields.update(job_policy.resource_fields(spec, resources or {}))
    fields[SANDBOX_FIELD] = {"uid": place.uid, "network": place.network}
    fields[CMD_TYPE_FIELD] = kind  # what ran: the dashboard shows a shell command's result as its output
    fields[RAN_FIELD] = ran.command(kind, cmd)
    job_id, group_id, _ = queue_job(spec, group, name, url, run_code, args, {}, level, Placed(), fields)
    return job_id, group_id


def _no_code_on_scheduler(spec: ContextSpec) -> None:
    """CodeRefused for a web user's code bound for a scheduler context: no sandbox there, the cluster's job would
    run it as moi's own user."""
    if spec.scheduler is not None:
        raise CodeRefused(f"code over the web does not run on scheduler context {spec.name!r}; publish a service")
