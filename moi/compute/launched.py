"""Adding and removing engines of a cluster an operator started (``ipcluster start``, or
``ipyparallel.Cluster``), with whatever engine launcher it has: local, SSH, Slurm, MPI.

ipyparallel keeps such a cluster's state in its cluster file, ``cluster-<cluster_id>.json``, which it
writes beside the controller's connection file ``ipcontroller-<cluster_id>-client.json`` in the
profile's ``security`` directory. moi looks for it there: a context whose connection file has no
cluster file beside it cannot have engines added or removed by moi (the API answers 409).

Adding (``start``): ``python -m moi.compute.launched FILE N`` loads the cluster from its file
(``Cluster.from_dict``, with its profile's ``ipcluster_config.py``) and starts N engines with the
cluster's own launcher (``start_engines``), which writes the new engine set into the file:
``ipcluster stop`` stops them too. A process of its own, because loading a cluster watches each
engine it lists (a thread each, for as long as they run), which a long-running server must not gather.

Removing (``settle``, called by the context's leading dispatcher each tick): beyond the wanted count
(``moi:engines:wanted:<ctx>``), idle engines are retired (``moi.compute.scaling.plan``: they take no
more jobs) and, once no job runs on one, it is asked to shut down through the controller
(``Client.shutdown``): it exits, on whatever host or Slurm node it runs. Once the context has as
many engines as wanted, the count is forgotten: moi never starts engines of such a cluster by
itself, and leaves alone engines the operator starts by hand later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from moi.compute import scaling
from moi.core.config import ContextSpec
from moi.core.errors import EngineCountRefused
from moi.core.redact import printable
from moi.storage.redis_errors import reaching
from moi.storage.store import Store

log = logging.getLogger("moi.scaling")

START_TIMEOUT = 300.0  # seconds a launcher may take to start engines (ssh to a slow host, sbatch)
_CONNECTION_FILE = re.compile(r"ipcontroller(?:-(.+))?-client\.json")


def cluster_file(spec: ContextSpec) -> str | None:
    """The cluster file beside a context's connection file; None when there is none (or it is the embedded one)."""
    connection = spec.connection_file()
    found = _CONNECTION_FILE.fullmatch(os.path.basename(connection)) if connection else None
    if connection is None or found is None:
        return None
    path = os.path.join(os.path.dirname(connection), f"cluster-{found.group(1) or ''}.json")
    return path if os.path.isfile(path) else None


def change(store: Store, spec: ContextSpec, by: int) -> int:
    """One engine more (started now, with the cluster's launcher) or fewer (retired by the leading dispatcher)
    for a cluster the operator started; the count now wanted. EngineCountRefused when moi cannot."""
    path = cluster_file(spec)
    if path is None:
        raise EngineCountRefused(
            f"context {spec.name!r} has no cluster file beside its connection file: moi adds and removes engines "
            "only of a cluster started with ipcluster or ipyparallel.Cluster (docs/deploy.md)"
        )
    with reaching(store.url):
        note = store.redis.get(store.keys.online(spec.name))
        retiring = store.redis.scard(store.keys.engines_retiring(spec.name))
    if note is None:
        raise EngineCountRefused(f"context {spec.name!r} is offline: its engines cannot be counted now")
    count = scaling.change(store, spec.name, by, int(json.loads(note).get("engines") or 0))
    if by > 0 and not retiring:  # a retiring engine, if any, stays instead (scaling.plan)
        try:
            start(path, by)
        except EngineCountRefused:
            with reaching(store.url):
                store.redis.incrby(store.keys.engines_wanted(spec.name), -by)
            raise
    return count


def start(path: str, count: int = 1) -> None:
    """Start ``count`` engines of the cluster in ``path`` with its own launcher; EngineCountRefused if it fails."""
    command = [sys.executable, "-m", "moi.compute.launched", path, str(count)]
    # Its error in a file, not a pipe: what the launcher starts (ssh sessions) inherits it and keeps a pipe open.
    with tempfile.TemporaryFile("w+") as errors:
        try:
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors, timeout=START_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as error:
            raise EngineCountRefused(f"the cluster's launcher took over {START_TIMEOUT:g}s to start engines") from error
        errors.seek(0)
        lines = [line for line in errors.read().splitlines() if line.strip()] or ["no error message"]
    if done.returncode != 0:
        raise EngineCountRefused(f"the cluster's launcher failed to start engines: {printable(lines[-1])}")
    log.warning("started %d engine(s) of the cluster in %s", count, path)


def settle(store: Store, context: str, client: Any, known: dict[int, str]) -> None:
    """Retire engines beyond what is wanted, shut down the idle retiring ones, forget the count once met.

    ``known``: the context's engines that said who they are (engine id -> label).
    """
    target = scaling.wanted(store, context, None)
    if target is None:
        return  # nobody asked: the operator's cluster is as the operator made it
    labels = set(known.values())
    retiring, idle = scaling.plan(store, context, labels, target)
    if not retiring and len(labels) == target == len(client.ids):  # every engine met (a busy one answers late)
        with reaching(store.url):
            store.redis.delete(store.keys.engines_wanted(context))
        return
    ids = [engine for engine, label in known.items() if label in idle]
    if ids:
        log.warning("stopping engine(s) %s of %s: fewer engines wanted", sorted(idle), context)
        with contextlib.suppress(Exception):  # an engine gone meanwhile: its label leaves the set next tick
            client.shutdown(targets=ids, block=False)


# A running engine set's own settings a new set takes (ssh hosts and arguments, a batch template and queue):
# given on ipcluster's command line, they are kept nowhere but in the cluster file. Not these, its state.
_NOT_COPIED = {"profile_dir", "cluster_id", "n", "state", "engine_set_id", "pid", "job_id", "output_file"}


def like_running(cluster: Any) -> dict[str, Any]:
    """The settings of the cluster's first running engine set that a new one should share (none if none runs)."""
    template = next(iter(cluster.engines.values()), None)
    if template is None:
        return {}
    names = set(template.traits(config=True)) & set(template.traits(to_dict=True))
    copied = {name: getattr(template, name) for name in sorted(names - _NOT_COPIED)}
    if "engines" in copied:  # an ssh set: its hosts, unless the profile's configuration names them
        configured = cluster.config[type(template).__name__].get("engines")
        hosts = _hosts(copied.pop("engines"))
        if hosts and not configured:
            copied["engines"] = hosts
    return copied


def _hosts(engines: Any) -> dict[str, int]:
    """An ssh engine set's hosts (``user@host`` -> engines) from the state of its engines in the cluster file
    (where the set's own ``engines`` setting, the hosts, is not kept)."""
    hosts: dict[str, int] = {}
    for state in engines.values() if isinstance(engines, dict) else []:
        if isinstance(state, dict) and state.get("hostname"):
            host = f"{state['user']}@{state['hostname']}" if state.get("user") else str(state["hostname"])
            hosts[host] = hosts.get(host, 0) + 1
    return hosts


def main(arguments: list[str]) -> int:
    """``python -m moi.compute.launched FILE N``: start N engines of the cluster in FILE, print their set's id."""
    import ipyparallel  # imported here: it is slow
    from ipyparallel.cluster.launcher import BatchSystemLauncher

    path, count = arguments[0], int(arguments[1])
    with open(path) as file:
        state = json.load(file)
    # Configured by its own profile's ipcluster_config.py (a batch launcher's time limit, say), which
    # Cluster.from_file does not load: it makes the cluster in the default profile, then moves it.
    profile = {"profile_dir": state["cluster"]["profile_dir"]} if state["cluster"].get("profile_dir") else {}
    cluster = ipyparallel.Cluster.from_dict(state, cluster_file=path, log_level=logging.WARNING, **profile)
    if issubclass(cluster.engine_launcher_class, BatchSystemLauncher):
        # A batch launcher (Slurm, PBS, LSF...) writes its script into the working directory, and the job runs
        # there: the profile's directory, not the server's (neither the operator's choice nor always writable).
        os.chdir(cluster.profile_dir)
    set_id = cluster.start_engines_sync(count, **like_running(cluster))
    if getattr(cluster.engines[set_id], "n", count) == 0:  # an ssh launcher with no hosts configured, say
        print(f"the cluster's launcher ({type(cluster.engines[set_id]).__name__}) started no engine", file=sys.stderr)
        return 1
    print(set_id, flush=True)
    # Leave at once: the launchers' watches of the engines (a thread each, an ssh session polling each remote
    # engine) would hold this process a minute or more at exit, and the engines run on without them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
