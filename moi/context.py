"""Contexts: one per ipyparallel cluster, connected on first use."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import ContextSpec
from .errors import ClusterUnavailable

if TYPE_CHECKING:
    import ipyparallel

log = logging.getLogger("moi.context")


class Context:
    """A named ipyparallel cluster. Nothing connects until a job is sent."""

    def __init__(self, spec: ContextSpec, timeout: float = 10.0) -> None:
        self.spec = spec
        self.name = spec.name
        self.timeout = timeout
        self._client: ipyparallel.Client | None = None
        self._view: ipyparallel.LoadBalancedView | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Context({self.name!r})"

    @property
    def client(self) -> ipyparallel.Client:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    @property
    def view(self) -> ipyparallel.LoadBalancedView:
        client = self.client
        if self._view is None:
            self._view = client.load_balanced_view()
        return self._view

    def _connect(self) -> ipyparallel.Client:
        import ipyparallel  # imported here: it is slow, and only submitters need it

        spec = self.spec
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if spec.profile:
            kwargs["profile"] = spec.profile
        if spec.cluster_id:
            kwargs["cluster_id"] = spec.cluster_id
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints while it waits
                client = ipyparallel.Client(spec.url_file, **kwargs)
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterUnavailable(
                f"Cluster for context {self.name!r} is unreachable ({_reason(error)}); "
                "start it (moi status shows the embedded one) or check [ipython] context"
            ) from error
        try:
            client.wait_for_engines(1, timeout=self.timeout)
        except TimeoutError as error:
            client.close()
            raise ClusterUnavailable(
                f"Cluster for context {self.name!r} has no engines after {self.timeout:g}s; start some engines"
            ) from error
        log.info("connected to cluster %s with %d engines", self.name, len(client.ids))
        return client

    def queued_entry(self) -> str:
        """What the queued index holds for a job waiting in this cluster (JSON)."""
        return json.dumps({"context": self.name, **self.controller()})

    def controller(self) -> dict[str, str]:
        """Where this cluster's controller listens and which one it is, for the watchdog.

        ``identity`` is a digest of the controller's session key (never the key
        itself): a restarted controller has a new key, and has lost the old tasks.
        """
        config: dict[str, Any] = getattr(self.client, "_config", {}) or {}
        key = config.get("key") or ""
        if isinstance(key, bytes):
            key = key.decode()
        return {
            "registration": str(config.get("registration") or ""),
            "identity": key_digest(key),
            "file": self.spec.url_file or "",
        }

    def confirm_delivery(self, msg_ids: list[str], timeout: float = 30.0) -> None:
        """Wait until the controller knows of these tasks.

        zmq sends in the background: a process that exits right after
        submitting drops what is still unsent, leaving its jobs Queued for
        ever. The controller answers for a task only once it holds it.
        """
        import ipyparallel

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.result_status(msg_ids, status_only=True)
                return
            except ipyparallel.error.RemoteError:  # "No such message": not there yet
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(
                        f"Cluster for context {self.name!r} did not acknowledge the job within {timeout:g}s"
                    ) from None
                time.sleep(0.02)

    def reset(self) -> None:
        """Forget the connection, so the next use reconnects."""
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self._view = None


def key_digest(key: str) -> str:
    """Names a controller by its session key without revealing the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ByName:
    """A module-level function as a task should carry it: by its name.

    ipyparallel ships a function as its code object (about 2 KB for run_job,
    on every task, through the controller to the engine); this object
    pickles as the function's module and name, and calls it there.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.module = func.__module__
        self.name = func.__qualname__

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
