"""The embedded local runtime: one Redis server and one ipyparallel cluster per user.

The first moi process that needs them starts a supervisor in the background
(``python -m moi.runtime``), which runs an embedded redis-server and a local
cluster, writes where they are to ``runtime.json`` in the state directory,
and stops both when it gets SIGTERM (``moi down``). A file lock makes sure
that two moi commands started at once start one runtime. While it runs, the
supervisor replaces any engine that dies (so the cluster keeps its size) and
runs the job watchdog (``moi.watchdog``) over the Redis jobs are kept in.

Only its owner may reach it. The state directory is 0700 and every file in it
0600; the Redis server asks for a password generated on first start (kept in
``redis/redis.conf`` and in ``runtime.json``, never on a command line), and
its commands that could run code or write files (``CONFIG``, ``MODULE``,
``DEBUG`` ...) are renamed away. A state directory or ``runtime.json`` that
another user owns or can write is refused, never trusted. The Redis keeps an
append-only file (fsync every second), so jobs survive ``moi down``, a crash
and a reboot; the supervisor restarts a redis-server that dies.

The supervisor and its engines run in the state directory with no
``PYTHONPATH`` and without the current directory on ``sys.path`` (``-P``):
what a job can import does not depend on where the runtime was first started.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RuntimeStartError, UnsafeStateDir
from .private import check_private, make_private_dir, private_file
from .redact import masked_url
from .redis_server import KeptRedis, free_port, start_redis  # noqa: F401  (moi.runtime.start_redis, free_port)

if TYPE_CHECKING:
    from .config import Settings
    from .store import Store

log = logging.getLogger("moi.runtime")

STATE_FILE = "runtime.json"
REDIS_DIR = "redis"
CLUSTER_ID = "moi"
START_TIMEOUT = 120.0
SUPERVISE_INTERVAL = 1.0  # seconds between looks at the engines


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
            [sys.executable, "-P", "-m", "moi.runtime", str(state_dir), str(engines), scheduler],
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


# the supervisor ---------------------------------------------------------------


async def _serve(state_dir: Path, engines: int, scheduler: str) -> None:
    import ipyparallel
    from traitlets.config import Config

    from .config import scheduler_args

    os.umask(0o077)  # everything the runtime, its Redis and its cluster write is its owner's alone
    redis_server = KeptRedis(state_dir / REDIS_DIR)
    config = Config()
    config.LocalEngineSetLauncher.engine_cmd = [sys.executable, "-P", "-m", "ipyparallel.engine"]
    cluster = ipyparallel.Cluster(
        n=engines,
        profile_dir=str(state_dir / "ipython"),
        cluster_id=CLUSTER_ID,
        log_level=logging.WARNING,
        controller_args=scheduler_args(scheduler),
        config=config,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await cluster.start_cluster()
        client = await cluster.connect_client()
        client.wait_for_engines(engines, timeout=START_TIMEOUT)
        client.close()
        url_file = os.path.join(cluster.profile_dir, "security", f"ipcontroller-{CLUSTER_ID}-client.json")
        info = RuntimeInfo(
            os.getpid(), redis_server.url, redis_server.pid, url_file, engines, time.strftime("%Y-%m-%d %H:%M:%S")
        )
        _write_state(state_dir, info)
        log.warning("moi runtime ready: redis %s, %d engines", masked_url(redis_server.url), engines)
        watching = asyncio.create_task(_watch_jobs(redis_server.url, url_file, stopping))
        await _keep_running(cluster, engines, redis_server, state_dir, info, stopping)
        await watching
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        try:
            await cluster.stop_cluster()
        finally:
            redis_server.stop()


async def _keep_running(
    cluster: Any, engines: int, redis_server: KeptRedis, state_dir: Path, info: RuntimeInfo, stopping: asyncio.Event
) -> None:
    """Replace engines that died and a Redis that died, and add or remove engines as asked, until the runtime stops."""
    from . import scaling

    store = _job_store(redis_server.url)
    while not stopping.is_set():
        if redis_server.restarted():
            info = replace(info, redis_pid=redis_server.pid)
            _write_state(state_dir, info)
        try:
            await scaling.settle(cluster, store, engines)
        except Exception as error:  # an engine that would not start, say: the next look tries again
            _look_failed(store, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SUPERVISE_INTERVAL)


def _look_failed(store: Store | None, error: Exception) -> None:
    from . import loops

    if store is None:
        log.warning("supervisor: replacing engines failed; going on: %s", loops.one_line(error))
    else:
        loops.failed(store, "supervisor", "replacing engines", error, log)


def _job_store(own_redis_url: str) -> Store | None:
    """The Redis moi processes of this user keep jobs in (the configured one, else the runtime's own)."""
    from .config import build_settings
    from .store import store_for

    try:
        settings = build_settings({})
    except ConfigError as error:  # a broken configuration must not take the cluster down
        log.error("no job watchdog: %s", error)
        return None
    return store_for(settings.redis_url or own_redis_url, settings.key_prefix, settings.ttl)


async def _watch_jobs(own_redis_url: str, url_file: str, stopping: asyncio.Event) -> None:
    """The watchdog over the Redis moi processes of this user keep jobs in, and the dispatcher
    of this cluster's queue: jobs queued while it was down run once it is up, submitter or not."""
    from . import dispatch
    from .config import ContextSpec, build_settings
    from .watchdog import watch

    store = _job_store(own_redis_url)
    if store is None:
        return
    settings = build_settings({})
    # ensure(): the process's registry, whose dead threads each watchdog pass starts again
    dispatch.ensure(store, ContextSpec(settings.default_context, url_file=url_file))
    try:
        await watch(store, stopping)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, dispatch.stop_all)


def _write_state(state_dir: Path, info: RuntimeInfo) -> None:
    tmp = state_dir / (STATE_FILE + ".tmp")
    with private_file(tmp) as handle:  # it holds the Redis password
        handle.write(json.dumps(asdict(info)))
    tmp.replace(state_dir / STATE_FILE)  # readers never see half a file


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir, engines = Path(argv[0]), int(argv[1])
    scheduler = argv[2] if len(argv) > 2 else "leastload"
    asyncio.run(_serve(state_dir, engines, scheduler))


if __name__ == "__main__":
    main(sys.argv[1:])
