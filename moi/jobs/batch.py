"""Batches: many jobs of one function (a parameter sweep), queued together.

Every item is its own job in moi's queue, exactly as ``submit`` makes one: its
own info object, Queued -> Running -> Success/Failed, each change published,
counted against its user's limits, pausable, cancellable while it runs, and
relaunchable. What is batched is the cost: the function is serialised once for
the whole batch (each item's call holds only its arguments and the batch's id),
and the items are stored ``ADD_PER_ROUND_TRIP`` per Lua call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Unpack

from moi.compute import engine
from moi.compute.context import Context, by_name
from moi.core import resources as job_resources
from moi.core import values
from moi.core.config import ContextSpec
from moi.core.errors import InputRefused
from moi.core.info import Info, Status, is_finished, new_id, new_info
from moi.core.policy import Policy
from moi.jobfiles.inputs import Inputs, Source, prepare
from moi.jobfiles.reading import summary
from moi.jobfiles.removal import remove_directory
from moi.jobs import connections, ran
from moi.jobs.job_policy import PolicyKeywords, policy_fields, resource_fields
from moi.queue import jobqueue as queue
from moi.queue.job_handle import JobHandle, kept_values
from moi.storage.store import Store

log = logging.getLogger("moi.batch")

ADD_PER_ROUND_TRIP = 1000  # items stored (and announced in one "add") per Lua call


class Batch:
    """The handle of a submitted batch: its job ids, read back from Redis."""

    def __init__(self, job_ids: list[str], store: Store) -> None:
        self.job_ids = job_ids
        self.store = store

    def __len__(self) -> int:
        return len(self.job_ids)

    def ready(self) -> bool:
        return all(is_finished(info) for info in self.store.get_many(self.job_ids))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every item has finished (or was removed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(self.job_ids)
        while True:
            pending = [info["id"] for info in self.store.get_many(pending) if not is_finished(info)]
            if not pending:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # Items run about in order: wait for the last one, then look again at the rest.
            JobHandle(pending[-1], self.store).wait(left)

    def get(self, timeout: float | None = None) -> list[Any]:
        """Every item's return value in order; None for an item that failed or was cancelled
        (its info object says why)."""
        if not self.wait(timeout):
            raise TimeoutError(f"batch of {len(self)} jobs not done after {timeout}s")
        infos = {info["id"]: info for info in self.store.get_many(self.job_ids)}
        succeeded = {job_id: info for job_id, info in infos.items() if info["status"] == Status.SUCCESS}
        kept = kept_values(
            self.store, [job_id for job_id, info in succeeded.items() if info["result_format"] == "repr"]
        )
        return [
            kept.get(job_id, succeeded[job_id]["result"]) if job_id in succeeded else None for job_id in self.job_ids
        ]


def submit_many(
    ctx: str | Context | None,
    group: str,
    name: str,
    url: str | None,
    func: Callable[..., Any],
    items: Iterable[Any],
    *,
    priority: str | int | None = None,
    files: Inputs | None = None,
    workdir: bool = False,
    resources: Mapping[str, Any] | None = None,
    outputs: str | None = None,
    **policy: Unpack[PolicyKeywords],
) -> tuple[list[str], str, Batch]:
    """Queue ``func(*item)`` for every item, each as its own job under ``group``.

    An item is a tuple of positional arguments; anything else is the single argument. Job ``i`` is named
    ``"<name> [i]"``. Returns ``(job_ids, group_id, batch)`` once every job is stored as Queued and announced.
    Past the hard limit the whole batch is refused (QuotaExceeded) before any item is stored. The other
    keywords are ``submit``'s (``time_limit``, ``retries``, ...), for every item: each gets its own directory
    with the same inputs (``outputs`` one folder per item id), the same time limit and retries (checked once),
    and attempts of its own; on a scheduler context, the same ``cores``, ``memory``, ... in ``resources``
    (checked once), each item its own scheduler job.
    """
    asked, shared_files = job_resources.split(resources)
    spec, level, fields = _checked(ctx, priority, name, url, Policy(**policy))
    fields.update(resource_fields(spec, asked, fields.get("time_limit")))
    store = connections.store()
    jobs = queue.Queue(store)
    batch_id = new_id()
    pending = _pending_items(store, batch_id, func, items, Named(name, url, spec.name, level), fields)
    with _removed_if_refused() as made:
        origin = _origin(pending, made, files, workdir, shared_files, outputs)
        jobs.keep_call(batch_id, queue.pack_call(by_name(func), (), {}, origin))
        group_id = _enqueue(jobs, group, spec.name, pending)
    connections.dispatcher(spec)
    log.debug("queued a batch of %d jobs for %s", len(pending), spec.name)
    job_ids = [info["id"] for info, _, _ in pending]
    return job_ids, group_id, Batch(job_ids, store)


def _checked(
    ctx: str | Context | None, priority: str | int | None, name: str, url: str | None, policy: Policy
) -> tuple[ContextSpec, int, dict[str, Any]]:
    """The batch's context spec, priority level and policy fields; its name, url and policy checked once,
    for every item's."""
    default = connections.settings().default_context
    spec = ctx.spec if isinstance(ctx, Context) else connections.context_spec(ctx or default)
    level = queue.priority_of(priority)
    values.check_line(name, "the batch's name")  # see moi.core.values
    values.check_line(url, "the batch's url")
    return spec, level, policy_fields(policy, spec.name)


@dataclass(frozen=True)
class Named:
    """What every item of a batch shares: its name (each item's is ``"<name> [i]"``), url, context, priority."""

    name: str
    url: str | None
    context: str
    level: int


def _pending_items(
    store: Store, batch_id: str, func: Callable[..., Any], items: Iterable[Any], named: Named, fields: dict[str, Any]
) -> list[tuple[Info, str, int]]:
    """Each item's new info (``"<name> [i]"``, with ``fields`` and what it runs), its call (its arguments and
    the batch's id) and its priority. An item is a tuple of positional arguments; anything else is the single
    argument."""
    arguments = [item if isinstance(item, tuple) else (item,) for item in items]
    return [
        (
            _new_job(store, f"{named.name} [{index}]", named, {**fields, "ran": ran.function_call(func, args, {})}),
            queue.item_call(batch_id, args),
            named.level,
        )
        for index, args in enumerate(arguments)
    ]


@contextmanager
def _removed_if_refused() -> Iterator[list[str]]:
    """The directories made for a batch's items: removed if the batch is refused, so nothing of it stays behind."""
    made: list[str] = []
    try:
        yield made
    except BaseException:
        for directory in made:
            remove_directory(directory)
        raise


def _origin(
    pending: list[tuple[Info, str, int]],
    made: list[str],
    files: Inputs | None,
    workdir: bool,
    resources: Mapping[str, str] | None,
    outputs: str | None,
) -> tuple[Any, ...]:
    """Where the batch was submitted from and, when its items have directories (``made`` here), what moves."""
    origin: tuple[Any, ...] = engine.submitted_from()
    if files is not None or workdir or resources or outputs:
        origin += ("", _directories(pending, made, files, resources, outputs))
    return origin


def _enqueue(jobs: queue.Queue, group: str, context: str, pending: list[tuple[Info, str, int]]) -> str:
    group_id, limits = group, connections.limits()
    for start in range(0, len(pending), ADD_PER_ROUND_TRIP):
        # The whole batch is checked against the hard limit with its first call; later calls only store.
        reserve = len(pending) if start == 0 else 0
        chunk_limits = limits if start == 0 else queue.Limits(limits.hog_size, 0)
        group_id, _ = jobs.enqueue(group, context, pending[start : start + ADD_PER_ROUND_TRIP], chunk_limits, reserve)
    return group_id


def _directories(
    pending: list[tuple[Info, str, int]],
    made: list[str],
    files: Inputs | None,
    resources: Mapping[str, str] | None,
    outputs: str | None,
) -> dict[str, Any]:
    """A directory per item, each with the inputs; what every item's engine moves (see moi.compute.batch_blocks)."""
    if isinstance(files, Mapping):  # a file object is read once, its bytes copied into every item's directory
        files = {name: _read_once(name, source) for name, source in files.items()}
    elif files is not None:
        files = list(files)
    transfers: dict[str, Any] = {}
    for info, _, _ in pending:
        directory, transfers = prepare(info["id"], files, resources, outputs)
        made.append(directory)
        info["files"] = summary(directory)
    return {**transfers, "jobs_root": connections.settings().jobs_root}


def _read_once(name: str, source: Source) -> Source:
    if not hasattr(source, "read"):
        return source
    data = source.read()
    if not isinstance(data, bytes):
        raise InputRefused(name, "its file object gives text: open it in binary mode ('rb')")
    return data


def _new_job(store: Store, name: str, named: Named, fields: dict[str, Any]) -> Info:
    job_id = new_id()
    info = new_info(job_id, name, "job", store.keys.channel(job_id), url=named.url, context=named.context)
    info["priority"] = named.level
    info.update(fields)  # shared lists (retry_on, backoff): each info is written as JSON, never changed here
    return info
