"""moi's own queue, in Redis: where a submitted job waits until an engine takes it.

``submit`` stores a job's info object, its call (the function and arguments,
serialised as ipyparallel serialises them) and its entry in its context's
queue, a sorted set by priority then order of submission, in one Lua call,
which also announces the job. Engines working for moi take the first entry
and mark it Running in one atomic step (see ``moi.compute.worker``); a dispatcher
starts that work on idle engines (see ``moi.compute.dispatch``). The cluster's
controller only ever carries "work on context X" tasks, never a job.
"""

from __future__ import annotations

import base64
import json
import pickle
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moi.core.errors import EngineRetiring, InvalidPriority, PriorityAboveCeiling, QuotaExceeded, UnknownKey
from moi.core.info import Info, dumps, is_uuid, now
from moi.core.lua import ENQUEUE, MAX_PRIORITY, RELEASE, TAKE
from moi.queue.pause import scope_tokens
from moi.storage.redis_errors import reaching
from moi.storage.store import Store, message

# Named priorities; any integer from -MAX_PRIORITY to MAX_PRIORITY works too.
PRIORITIES = {"low": -1, "normal": 0, "high": 1}


@dataclass(frozen=True)
class Limits:
    """Per-user limits on unfinished jobs (0: none); see ``moi.core.config.Settings``."""

    hog_size: int = 0
    hard_limit: int = 0


NO_LIMITS = Limits()

# A batch item's call is "@<batch id>:<its arguments>": the function is the batch's own call, kept once.
ITEM_CALL = "@"


@dataclass(frozen=True)
class Taken:
    """A job an engine took from a queue: its info object (now Running), its call, its place in the queue."""

    info: Info
    call: str
    score: str


def within_ceiling(value: str | int | None, ceiling: int | None) -> int:
    """``priority_of(value)``, refused above ``ceiling`` (None: no ceiling, for an admin or the machine's user)."""
    level = priority_of(value)
    if ceiling is not None and level > ceiling:
        raise PriorityAboveCeiling(value, ceiling)
    return level


def priority_of(value: str | int | None) -> int:
    """A priority as a number: ``low``, ``normal`` (None too), ``high``, or an integer in range."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return PRIORITIES[value.strip().lower()]
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidPriority(value, MAX_PRIORITY) from None
    if isinstance(value, bool) or not -MAX_PRIORITY <= number <= MAX_PRIORITY or str(number) != str(value).strip():
        raise InvalidPriority(value, MAX_PRIORITY)
    return number


# the call ------------------------------------------------------------------------


_first_use = threading.Lock()
_ready = False


def serialisation_ready() -> None:
    """Import and run ipyparallel's serialisation once under a lock: its first use rewrites a shared
    table (type names to types), and its import is not safe from two threads at once (KeyError, or a
    partly initialised module). A server calls this before it starts threads."""
    global _ready
    if _ready:
        return
    with _first_use:
        if not _ready:
            from ipyparallel.serialize import pack_apply_message, unpack_apply_message

            unpack_apply_message(pack_apply_message(serialisation_ready, (), {}))
            _ready = True


def pack_call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], origin: Any) -> str:
    """A job's call as text for Redis: ipyparallel's serialisation (so interactively defined
    functions and numpy arrays travel as they would with ``apply``), with where it was submitted."""
    serialisation_ready()  # first: it imports ipyparallel's serialisation under its lock
    from ipyparallel.serialize import pack_apply_message

    buffers = [bytes(buffer) for buffer in pack_apply_message(func, args, kwargs)]
    return base64.b64encode(pickle.dumps((buffers, origin), protocol=pickle.HIGHEST_PROTOCOL)).decode()


def unpack_call(text: str) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any]:
    """``(func, args, kwargs, origin)`` of a packed call."""
    serialisation_ready()
    from ipyparallel.serialize import unpack_apply_message

    buffers, origin = pickle.loads(base64.b64decode(text))
    func, args, kwargs = unpack_apply_message(buffers, copy=True)
    return func, tuple(args), dict(kwargs), origin


def origin_of(call: str) -> Any:
    """Where a packed call says its job was submitted (``moi.compute.engine.submitted_from``, then the job
    directory and its transfers), read without unpacking its function or arguments: nothing of the job's
    own code is imported. None for a batch item's call (its batch's call holds it)."""
    if call.startswith(ITEM_CALL):
        return None
    _, origin = pickle.loads(base64.b64decode(call))
    return origin


def item_call(batch_id: str, args: tuple[Any, ...]) -> str:
    """A batch item's call: the batch's id (its function is the batch's own call) and the item's arguments."""
    return f"{ITEM_CALL}{batch_id}:{base64.b64encode(pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)).decode()}"


def batch_of(call: str) -> str | None:
    """The batch id of an item's call; None for a job's own call."""
    if not call.startswith(ITEM_CALL):
        return None
    return call[1:].partition(":")[0]


def item_arguments(call: str) -> tuple[Any, ...]:
    """The arguments of a batch item's call."""
    args: tuple[Any, ...] = pickle.loads(base64.b64decode(call[1:].partition(":")[2]))
    return args


# the queue -----------------------------------------------------------------------


class Queue:
    """The queues of every context, over one Store's Redis."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self._enqueue = store.redis.register_script(ENQUEUE)
        self._take = store.redis.register_script(TAKE)
        self._release = store.redis.register_script(RELEASE)

    def enqueue(
        self,
        group: str,
        context: str,
        jobs: list[tuple[Info, str, int]],
        limits: Limits = NO_LIMITS,
        reserve: int = 0,
    ) -> tuple[str, bool]:
        """Store ``(info, call, priority)`` jobs as Queued under ``group`` (a user name or group id).

        Returns the group id and whether the context's cluster was last seen online; raises
        QuotaExceeded (nothing written) past the hard limit, counting ``reserve`` jobs if more
        than these (a batch's first call counts the whole batch). One round trip while the group
        and its owner are remembered; sets each job's ``parent`` and ``owner``.
        """
        for _ in range(2):
            group_id = self.store.group_id(group)
            chain = self.store.chain_of(group_id)
            answer = self._enqueue_under(group_id, chain, context, jobs, limits, reserve)
            if answer[0] == 1:
                return group_id, bool(answer[1])
            if answer[0] == -1:
                owner = self._name_of(group, chain[-1])
                raise QuotaExceeded(owner, int(answer[1]), limits.hard_limit, max(reserve, len(jobs)))
            self.store.forget_group(group)  # removed meanwhile: look it up (or make it) again
        raise UnknownKey(group)

    def enqueue_child(self, parent: Info, context: str, info: Info, call: str, priority: int) -> bool:
        """Queue a job as a child of another job (a service job's retention hook, ``moi.services.retention_hooks``).

        In its owner's tree, under that job, as ``enqueue`` stores any job, but never refused nor held
        back by the owner's limits (it is moi's own upkeep), not counted among the owner's unfinished
        jobs (the set the limits count: a sweep that queues many hooks must not refuse the owner's own
        jobs), and left out of the listings (as a service's steps are). False, nothing written, when the
        parent job is gone.
        """
        group = parent.get("parent")  # its group's chain is remembered: one lookup per group, not per job
        chain = [parent["id"], *self.store.chain_of(group)] if isinstance(group, str) else [parent["id"]]
        answer = self._enqueue_under(parent["id"], chain, context, [(info, call, priority)], NO_LIMITS, 0)
        if answer[0] != 1:
            return False
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.zrem(self.keys.index(chain[-1]), info["id"])
        pipe.zrem(self.keys.index_all, info["id"])
        pipe.srem(self.keys.active(chain[-1]), info["id"])
        with reaching(self.store.url):
            pipe.execute()
        return True

    def _enqueue_under(
        self,
        group_id: str,
        chain: list[str],
        context: str,
        jobs: list[tuple[Info, str, int]],
        limits: Limits,
        reserve: int,
    ) -> list[Any]:
        keys, owner = self.keys, chain[-1]
        note = f"for the cluster of context {context!r}, not seen online yet"
        ttl = max([self.store.ttl] + [self.store.ttl_of(info) for info, _, _ in jobs])  # a service job's own
        args: list[Any] = [ttl, keys.channel(group_id), _added(jobs), keys.prefix, keys.wake(context), note]
        tokens = scope_tokens(context, chain)
        args += [limits.hog_size, limits.hard_limit, reserve, len(tokens), *tokens]
        for info, call, priority in jobs:
            info.update(parent=group_id, owner=owner)
            args += [info["id"], dumps(info), call, priority]
        script_keys = [
            keys.info(group_id),
            keys.children(group_id),
            keys.queue(context),
            keys.seq,
            keys.wakeup(context),
            keys.online(context),
            keys.active(owner),
            keys.paused,
            keys.held(context),
            keys.index(owner),
            keys.index_all,
            keys.fair_clock(context),
            keys.fair_last(context, owner),
        ]
        with reaching(self.store.url), self.store.holding((script_keys[1], "set"), (script_keys[2], "zset")):
            answer: list[Any] = self._enqueue(keys=script_keys, args=args)
        return answer

    def _name_of(self, group: str, owner: str) -> str:
        """The user a refusal is about: the name given, else the name the owner's group maps to."""
        if group != owner and not is_uuid(group):
            return group
        with reaching(self.store.url):
            return self.store.redis.hget(self.keys.user_map, owner) or owner

    def take(
        self,
        context: str,
        label: str,
        heartbeat_ttl: int,
        most: int = 1,
        batch: str | None = None,
        still_queued: bool = False,
    ) -> list[Taken]:
        """The first job of ``context``'s queue, now Running on this engine; none when there is none.

        When that job is an item of ``batch``, up to ``most`` of the batch's items that follow
        it come too, each Running: a block the engine runs one after another. Raises
        EngineRetiring when this engine is to stop (the operations page removed it). A queued job
        whose document cannot be read back is Failed on the way, alone, saying so (see ``TAKE``).
        ``still_queued``: the job stays Queued (a scheduler context's poller hands it to its batch scheduler).
        """
        keys = self.keys
        wanted = f"{ITEM_CALL}{batch}:" if batch else ""
        args = [keys.prefix, self.store.ttl, label, heartbeat_ttl, now(), max(1, most), wanted, keys.active("")]
        args.append("queued" if still_queued else "")
        retiring = keys.engines_retiring(context)
        script_keys = [keys.queue(context), keys.running, retiring, keys.tally, keys.fair_clock(context)]
        with reaching(self.store.url):
            taken = self._take(keys=script_keys, args=args) or []
        if taken == ["retiring"]:
            raise EngineRetiring(label)
        # The script checked each is a Queued info object.
        return [Taken(json.loads(taken[i]), taken[i + 1], taken[i + 2]) for i in range(0, len(taken), 3)]

    def release(self, context: str, label: str, jobs: list[Taken]) -> int:
        """Give jobs taken but not started back to the queue, at their old places; how many went back."""
        keys = self.keys
        args: list[Any] = [keys.prefix, self.store.ttl, label, keys.wake(context), now(), keys.active("")]
        for job in jobs:  # of the attempt taken: a newer one (the watchdog queued it again) is not this engine's
            args += [job.info["id"], job.score, job.info.get("attempt", "")]
        with reaching(self.store.url):
            return int(
                self._release(keys=[keys.queue(context), keys.running, keys.wakeup(context), keys.tally], args=args)
            )

    def wait_for_work(self, context: str, timeout: float) -> None:
        """Block until a job is added to ``context``'s queue (a wakeup token), at most ``timeout`` s."""
        with reaching(self.store.url):
            self.store.redis.blpop([self.keys.wakeup(context)], timeout=max(timeout, 0.01))

    def depth(self, context: str) -> int:
        with reaching(self.store.url):
            return int(self.store.redis.zcard(self.keys.queue(context)))

    def keep_call(self, call_id: str, call: str) -> None:
        """Keep a call shared by many jobs (a batch's function), for as long as the jobs live."""
        with reaching(self.store.url):
            self.store.redis.set(self.keys.call(call_id), call, ex=self.store.ttl)

    def call_of(self, job_id: str) -> str | None:
        """A job's packed call (kept until the job expires, for relaunch)."""
        with reaching(self.store.url):
            return self.store.redis.get(self.keys.call(job_id))


def _added(jobs: list[tuple[Info, str, int]]) -> str:
    return message("add", [info["id"] for info, _, _ in jobs])
