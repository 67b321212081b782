"""Contexts: one per ipyparallel cluster, connected on first use."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moi.core.config import ContextSpec
from moi.core.errors import ClusterUnavailable

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
        self._confirm_at_exit = False

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
        if spec.url_file and not os.path.exists(spec.url_file):
            # Not started yet: no controller wrote its connection file (and Client would wait, printing).
            raise ClusterUnavailable(f"Cluster for context {self.name!r} is not started: no {spec.url_file}")
        # Client prints while it waits. sys.stdout is the whole process's: swapping it from a
        # dispatcher's thread would swallow what the main thread prints meanwhile.
        quiet = threading.current_thread() is threading.main_thread()
        try:
            with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
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
        import ipyparallel  # imported here: it is slow, and only submitters need it

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

    def deliver_before_exit(self) -> None:
        """Make sure, when this process exits, that the controller holds every task it sent.

        A script that submits and exits at once would otherwise drop what zmq
        had not sent yet, leaving its job Queued for ever.
        """
        if not self._confirm_at_exit:
            self._confirm_at_exit = True
            # Registered after the client connected, so it runs before ipyparallel's own exit handlers.
            atexit.register(self._confirm_outstanding)

    def _confirm_outstanding(self) -> None:
        client = self._client
        msg_ids = sorted(client.outstanding) if client is not None else []
        if not msg_ids:
            return
        try:
            self.confirm_delivery(msg_ids)
        except ClusterUnavailable as error:
            log.warning("%s; %d job(s) may stay Queued until the watchdog fails them", error, len(msg_ids))

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


def by_name(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a task should carry it: a module-level function by its name, anything else as it is.

    By name, it is imported on the engine when the job calls it, inside the
    submitter's working directory (see ``engine.in_directory``): a function
    from a module beside the submitter's script is found there.
    """
    module = sys.modules.get(getattr(func, "__module__", None) or "")
    name = getattr(func, "__qualname__", "")
    if module is None or module.__name__ == "__main__" or "." in name or "<" in name:
        return func  # a closure, a lambda, a method or a script's own function: shipped as code
    return ByName(func) if getattr(module, name, None) is func else func


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

    def resolve(self) -> Callable[..., Any]:
        """The function itself (imported here, on first use)."""
        func: Callable[..., Any] = getattr(importlib.import_module(self.module), self.name)
        return func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
