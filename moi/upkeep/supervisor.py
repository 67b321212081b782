"""The embedded runtime's supervisor: ``python -m moi.upkeep.supervisor STATE_DIR ENGINES [SCHEDULER]``.

Started in the background by ``moi.storage.runtime.ensure``, it runs an embedded redis-server and a
local cluster, writes where they are to ``runtime.json`` (0600: it holds the Redis password), replaces
an engine or a Redis that dies, adds or removes engines as asked (``moi.compute.scaling``), runs the
watchdog's pass and a dispatcher over the Redis jobs are kept in, and stops both on SIGTERM.

Its Redis (``moi.storage.redis_server``) keeps an append-only file (fsync every second), so jobs
survive ``moi down``, a crash and a reboot, and has the commands through which a client could run
code or write files (``CONFIG``, ``MODULE``, ``DEBUG`` ...) renamed away. Everything the runtime
writes is its owner's alone (umask 077).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import ipyparallel
from traitlets.config import Config

from moi.compute import dispatch, scaling
from moi.core.config import ContextSpec, build_settings, scheduler_args
from moi.core.errors import ConfigError
from moi.core.redact import masked_url
from moi.storage import loops
from moi.storage.owner_only import private_file
from moi.storage.redis_server import KeptRedis
from moi.storage.runtime import START_TIMEOUT, STATE_FILE, RuntimeInfo
from moi.storage.store import Store, store_for
from moi.upkeep.passes import watch

log = logging.getLogger("moi.runtime")

REDIS_DIR = "redis"
CLUSTER_ID = "moi"
SUPERVISE_INTERVAL = 1.0  # seconds between looks at the engines


async def _serve(state_dir: Path, engines: int, scheduler: str) -> None:
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
    store, context = _job_store(redis_server.url), _context_name()
    while not stopping.is_set():
        if redis_server.restarted():
            info = replace(info, redis_pid=redis_server.pid)
            _write_state(state_dir, info)
        try:
            await scaling.settle(cluster, store, context, engines)
        except Exception as error:  # an engine that would not start, say: the next look tries again
            _look_failed(store, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SUPERVISE_INTERVAL)


def _look_failed(store: Store | None, error: Exception) -> None:
    if store is None:
        log.warning("supervisor: replacing engines failed; going on: %s", loops.one_line(error))
    else:
        loops.failed(store, "supervisor", "replacing engines", error, log)


def _context_name() -> str:
    """The embedded cluster's context: the default one (its wanted count is kept under this name)."""
    try:
        return build_settings({}).default_context
    except ConfigError:
        return "default"


def _job_store(own_redis_url: str) -> Store | None:
    """The Redis moi processes of this user keep jobs in (the configured one, else the runtime's own)."""
    try:
        settings = build_settings({})
    except ConfigError as error:  # a broken configuration must not take the cluster down
        log.error("no job watchdog: %s", error)
        return None
    return store_for(settings.redis_url or own_redis_url, settings.key_prefix, settings.ttl)


async def _watch_jobs(own_redis_url: str, url_file: str, stopping: asyncio.Event) -> None:
    """The watchdog over the Redis moi processes of this user keep jobs in, and the dispatcher
    of this cluster's queue: jobs queued while it was down run once it is up, submitter or not."""
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
