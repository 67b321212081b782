"""What ``submit`` returns: the part of ipyparallel's AsyncResult that applications use, for one job."""

from __future__ import annotations

import base64
import pickle
import time
from typing import Any

from moi.core.errors import JobCancelled, JobFailed
from moi.core.info import Info, Status, is_finished
from moi.storage.redis_errors import reaching
from moi.storage.store import Store


class JobHandle:
    """A submitted job: ``wait``, ``ready``, ``successful``, ``get`` and its ``job_id``.

    It reads the job's state from Redis, so it works from any process and across
    restarts of the cluster, and never holds the job itself.
    """

    def __init__(self, job_id: str, store: Store) -> None:
        self.job_id = job_id
        self.store = store

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id}>"

    def ready(self) -> bool:
        return is_finished(self.store.get(self.job_id))

    def successful(self) -> bool:
        """Whether the job finished with Success (False while it has not finished)."""
        return bool(self.store.get(self.job_id)["status"] == Status.SUCCESS)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finishes or ``timeout`` seconds pass; whether it finished."""
        return is_finished(self._wait(timeout))

    def get(self, timeout: float | None = None) -> Any:
        """The function's return value; raises its exception if it failed, JobCancelled if
        cancelled, TimeoutError if it has not finished within ``timeout`` seconds."""
        info = self._wait(timeout)
        if not is_finished(info):
            raise TimeoutError(f"job {self.job_id} still {info['status']} after {timeout}s")
        if info["status"] == Status.CANCELLED:
            raise JobCancelled(f"Job {self.job_id} was cancelled: {info.get('result')}")
        kept = self._kept_value() if info.get("result_format") in ("repr", "traceback") else None
        if info["status"] == Status.FAILED:
            if isinstance(kept, BaseException):
                raise kept
            raise JobFailed(self.job_id, str(info.get("result") or ""))
        return kept if kept is not None else info.get("result")

    def _kept_value(self) -> Any:
        return kept_values(self.store, [self.job_id]).get(self.job_id)

    def _wait(self, timeout: float | None) -> Info:
        info = self.store.get(self.job_id)
        if is_finished(info) or timeout == 0:
            return info
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
        try:
            with reaching(self.store.url):
                pubsub.subscribe(self.store.keys.channel(self.job_id))  # then read: no update slips by
            info = self.store.get(self.job_id)
            while not is_finished(info):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                with reaching(self.store.url):
                    pubsub.get_message(timeout=min(1.0, left) if left is not None else 1.0)
                info = self.store.get(self.job_id)
            return info
        finally:
            pubsub.close()


def kept_values(store: Store, job_ids: list[str]) -> dict[str, Any]:
    """The pickled values kept beside these jobs' info objects, one round trip; a value this process
    cannot load (a class it cannot import) is left out: the stored repr or traceback stands."""
    if not job_ids:
        return {}
    with reaching(store.url):
        texts = store.redis.mget([store.keys.value(job_id) for job_id in job_ids])
    values = {}
    for job_id, text in zip(job_ids, texts, strict=True):
        if text is None:
            continue
        try:
            values[job_id] = pickle.loads(base64.b64decode(text))
        except Exception:
            continue
    return values
