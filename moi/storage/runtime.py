"""The embedded local runtime, as its users find it: started, read and stopped.

The embedded runtime is one Redis server and one ipyparallel cluster per user. The first moi
process that needs them starts its supervisor in the background (``python -m moi.upkeep.supervisor``,
see there), waits for it to write where they are to ``runtime.json`` in the state directory, and
reads that file from then on; ``stop`` (``moi down``) sends the supervisor SIGTERM. A file lock makes
sure that two moi commands started at once start one runtime.

Only its owner may reach it. The state directory is 0700 and every file in it 0600; the Redis
server asks for a password generated on first start (kept in ``redis/redis.conf`` and in
``runtime.json``, never on a command line). A state directory or ``runtime.json`` that another user
owns or can write is refused, never trusted. The supervisor runs in the state directory with no
``PYTHONPATH`` and without the current directory on ``sys.path`` (``-P``): what a job can import does
not depend on where the runtime was first started.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moi.core.errors import RuntimeStartError, UnsafeStateDir
from moi.storage.owner_only import check_private, make_private_dir, private_file

if TYPE_CHECKING:
    from moi.core.config import Settings

log = logging.getLogger("moi.runtime")

STATE_FILE = "runtime.json"
START_TIMEOUT = 120.0


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    redis_url: str
    redis_pid: int
    url_file: str
    engines: int
    started: str


# finding and starting -----------------------------------------------------


def ensure(settings: Settings) -> RuntimeInfo:
    """The running runtime, started first if there is none."""
    state_dir = Path(settings.state_dir)
    make_private_dir(state_dir)
    info = read(state_dir)
    if info is not None:
        return info
    with _locked(state_dir):
        info = read(state_dir)  # someone else may have started it while we waited
        if info is None:
            info = _start(state_dir, settings.engines or os.cpu_count() or 1, settings.scheduler)
    return info


def read(state_dir: Path) -> RuntimeInfo | None:
    """The runtime recorded in ``state_dir``, if its supervisor is alive.

    Raises UnsafeStateDir when the directory or ``runtime.json`` could have
    been written by another user: what it says would then be theirs to say.
    """
    path = state_dir / STATE_FILE
    if not state_dir.exists():
        return None
    check_private(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UnsafeStateDir(f"Cannot read {path} ({error.strerror}); remove it, moi writes a new one") from None
    with os.fdopen(fd) as handle:
        check_private(path, os.fstat(handle.fileno()))
        try:
            info = RuntimeInfo(**json.loads(handle.read()))
        except (ValueError, TypeError):
            return None
    return info if _alive(info.pid) else None


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    make_private_dir(state_dir)
    with private_file(state_dir / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start(state_dir: Path, engines: int, scheduler: str) -> RuntimeInfo:
    log_path = state_dir / "runtime.log"
    with private_file(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            # -P: the directory it runs in is not on sys.path (see the module docstring).
            # A program started by name, not an import: the supervisor (the top of a process's wiring)
            # runs in its own process, so this layer never imports it.
            [sys.executable, "-P", "-m", "moi.upkeep.supervisor", str(state_dir), str(engines), scheduler],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=state_dir,
            env=clean_environment(),
            start_new_session=True,  # outlives the command that started it
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        info = read(state_dir)
        if info is not None and info.pid == proc.pid:
            return info
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        proc.terminate()
    raise RuntimeStartError(f"The local moi runtime did not start; see {log_path}: {_last_line(log_path)}")


def clean_environment() -> dict[str, str]:
    """The environment of the runtime and its engines: this one, without what changes what Python imports."""
    return {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONSTARTUP")}


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# stopping ---------------------------------------------------------------------


def stop(state_dir: Path, timeout: float = 30.0) -> RuntimeInfo | None:
    """Stop the runtime and wait until it is gone; the runtime that was stopped, if any."""
    with _locked(state_dir):
        info = read(state_dir)
        if info is None:
            return None
        os.kill(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(info.pid):
            os.killpg(info.pid, signal.SIGKILL)
        return info
