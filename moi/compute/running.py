"""A job on its engine: marked Running, its function called with what moi gives it, its end recorded.

``run_started`` calls a job that the worker loop (``moi.compute.worker``) or a block
(``moi.compute.batch_blocks``) has taken and marked Running; ``_Tracker`` keeps the engine's copy of the
info object, so each status text is usually one round trip, and the final write lands even across
a Redis outage. The engine needs no moi configuration: the job's spec says which Redis to write to.
A job past its time limit ends Failed with one line (``moi.compute.time_limits``); an attempt that fails
and may retry is queued again instead (``moi.compute.attempts``), and every write is this attempt's only.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import pickle
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from moi.compute import arguments, attempts, engine
from moi.compute import origin as origin_of
from moi.core import values
from moi.core.errors import (
    CodeFailed,
    FetchFailed,
    JobCancelled,
    JobSoftTimeLimit,
    JobTimeLimit,
    MoveFailed,
    RedisUnavailable,
    StepFailed,
    UnknownId,
)
from moi.core.info import Info, Status, encode_result, is_finished, now
from moi.core.policy import time_limit_reason
from moi.jobfiles import on_engine
from moi.storage.store import Change, Store

log = logging.getLogger("moi.job")


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
    origin = origin_of.moved(origin, info)  # a retry runs where its directory went meanwhile
    workdir = origin_of.workdir_of(origin)
    tracker = _Tracker(store, info["id"], info, also_at_end=liveness.unregistering(), workdir=workdir)
    tracker.transfers = origin[3] if origin and len(origin) > 3 else {}
    if workdir and not os.path.isdir(workdir):  # a jobs root this host does not share
        tracker.finish(Status.FAILED, on_engine.unseen(workdir, liveness.label), "text")
        return None
    liveness.on_abandon = functools.partial(_given_up, tracker)
    liveness.start()
    try:
        with origin_of.in_directory(origin), on_engine.job_environment(workdir), engine.running(store, info):
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
                on_engine.bring_in(tracker.workdir, tracker.transfers)
            takes = arguments.accepted(func)
            moi_names = arguments.moi_kwargs(takes, tracker.status_update, tracker.info, tracker.workdir)
            result = func(*args, **{**kwargs, **moi_names})
            if liveness.timed_out:  # it caught JobTimeLimit and returned: past its limit all the same
                raise JobTimeLimit(time_limit_reason(tracker.info))
            if tracker.workdir:
                _send_out(tracker)
    except BaseException as error:  # KeyboardInterrupt or SystemExit must not leave it Running either
        _record_failure(tracker, liveness, error)
        if liveness.cancel_requested and not liveness.timed_out:
            raise JobCancelled(f"Job {tracker.job_id} was cancelled") from None
        raise
    value, result_format = encode_result(result)
    # A value JSON cannot hold is kept pickled too, so a handle's get() returns the object itself.
    tracker.finish(Status.SUCCESS, value, result_format, pickled(result) if result_format == "repr" else None)
    return result


def _record_failure(tracker: _Tracker, liveness: engine.Liveness, error: BaseException) -> None:
    """How the job ended, from within its ``except``: past its time limit, cancelled, or failed (``error``).
    An attempt a newer one superseded records nothing: the job is not its own any more."""
    if liveness.superseded:
        log.info("job %s: attempt %s stopped, unrecorded", tracker.job_id, tracker.attempt)
    elif liveness.timed_out:  # what the function raised as it was interrupted is beside the point
        reason = time_limit_reason(tracker.info)
        tracker.finish(Status.FAILED, reason, "text", cause=JobTimeLimit(reason))
    elif liveness.cancel_requested:
        tracker.finish(Status.CANCELLED, "Cancelled while running", "text")
    elif isinstance(error, JobSoftTimeLimit) and liveness.soft_limited:  # the warning, not caught
        tracker.finish(Status.FAILED, time_limit_reason(tracker.info, soft=True), "text", cause=error)
    elif isinstance(error, FetchFailed | StepFailed | MoveFailed):  # its reason says it all: no moi traceback
        tracker.finish(Status.FAILED, str(error), "text", cause=error)
    elif isinstance(error, CodeFailed):  # the sandboxed child's own traceback, or why it gave none
        tracker.finish(Status.FAILED, str(error), error.result_format, cause=error)
    else:
        tracker.finish(Status.FAILED, traceback.format_exc(), "traceback", pickled(error), cause=error)


def _given_up(tracker: _Tracker, reason: str) -> None:
    """The job's function went on past its hard time limit and grace: recorded so, from the beater thread,
    before the engine ends (``moi.compute.time_limits``)."""
    tracker.finish(Status.FAILED, reason, "text", cause=JobTimeLimit(reason))


def _send_out(tracker: _Tracker) -> None:
    try:
        on_engine.send_out(tracker.workdir, tracker.transfers)
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
        self.attempt = info.get("attempt")  # the attempt taken: the writes of this tracker are its own only
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
            self.info = self.store.update(self.job_id, attempts.guarded(change, self.job_id, self.attempt), self.info)
        except RedisUnavailable as error:
            # A status text is a progress note: losing one must not fail the job.
            log.warning("job %s: status %r not recorded: %s", self.job_id, text, error)

    def finish(
        self,
        status: Status,
        result: Any,
        result_format: str,
        value: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """The final state of this attempt; ``value``: the pickled return value or exception, kept beside the info.

        A failure (``cause``: what failed it) that a retry is for queues the job again instead, as its next
        attempt (``moi.compute.attempts``): its value is kept only with its last attempt.
        """
        date_end = now()
        if status == Status.FAILED and attempts.retry_wanted(self.info, cause):
            instead = self._retry({"result": result, "result_format": result_format, "date_end": date_end})
            if instead is None:
                return
            if instead == Status.CANCELLED:  # asked as it failed: a cancel is never retried, nor lost
                status, result, result_format, value = Status.CANCELLED, "Cancelled while running", "text", None
        also = list(self.also_at_end)
        if value is not None:
            also.append(["SET", self.store.keys.value(self.job_id), value, "EX", self.store.ttl])
        held = on_engine.held(self.workdir)  # never raises: nothing may keep the final write from landing

        def change(info: Info) -> Info | None:
            if is_finished(info):
                return None
            info.update(status=status, result=result, result_format=result_format, date_end=date_end)
            if held is not None:
                info["files"] = held
            return info

        self._write_final(change, also, f"recording job {self.job_id} {status}")

    def _retry(self, ended: Info) -> Status | None:
        """This attempt failed, and another is due: the job Queued again, in its context's retry set. None once
        that is done (or was not this attempt's to do); else what to record instead: CANCELLED when the job's
        cancel was asked meanwhile (its flag refuses the write), FAILED when no retry can be made of its info."""
        keys = self.store.keys
        retry = attempts.next_attempt_write(keys, self.job_id, self.info, ended, self.store.ttl_of(self.info))
        if retry is None:
            return Status.FAILED
        change, commands = retry
        try:
            written = self._write_final(
                change, [*self.also_at_end, *commands], f"queueing job {self.job_id} again", keys.cancel(self.job_id)
            )
        except (RedisUnavailable, UnknownId):
            raise
        except Exception as error:  # the retry's change could not be made: the attempt fails as it is
            log.error("job %s: its next attempt cannot be queued (%s); it fails", self.job_id, error)
            return Status.FAILED
        if not written:
            return Status.CANCELLED
        if self.ended:
            due = self.info.get("retry_at")
            log.info(
                "job %s: attempt %s failed; attempt %s due at %s",
                self.job_id,
                self.attempt,
                self.info.get("attempt"),
                due,
            )
        return None

    def _write_final(
        self, change: Change, also: list[list[str | int]], what: str, unless_key: str | None = None
    ) -> bool:
        """The final write of this attempt, with ``also``; ``ended`` says whether it was ours. False when
        ``unless_key`` existed, so that the change, made, was not written."""
        made: list[Info | None] = []
        guarded = attempts.guarded(change, self.job_id, self.attempt)

        def counted(info: Info) -> Info | None:
            made[:] = [guarded(info)]  # the last attempt is the one that counted
            return made[0]

        # The final state must land even across a Redis outage (bounded: then it is logged).
        self.info = engine.retrying(
            lambda: self.store.update(self.job_id, counted, self.info, also=also, unless_key=unless_key), what
        )
        new = made[0] if made else None
        self.ended = new is not None and self.info is new  # update returns the change's own dict once written
        return new is None or self.ended
