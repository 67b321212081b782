"""The operations routes of the HTTP API (the operations page reads them): queues, contexts, engines,
workers, throughput, services that cannot be loaded, and health. A user's own routes (jobs, their files
and log, groups, services) are ``moi.web.api``.

GET /api/v1/queues                      per context: depth by priority (high, normal, low), paused
GET /api/v1/contexts                    per context: online or offline, engines, queued, scalable; a scheduler
                                        context's scheduler: kind, where, reachable, error, polled, pending, running
GET /api/v1/throughput                  jobs ended per minute over the last hour, by status (admins)
GET /api/v1/workers                     engines per context: host, pid, idle/busy/lost, the job it runs, jobs done
GET /api/v1/services/unloadable         services that could not be loaded: why, where, when (admins)
POST /api/v1/contexts/{name}/engines/add (or /remove)   one engine more or fewer (admins): the embedded
                                        cluster, or one with a cluster file (``moi.compute.launched``)
GET /healthz                            Redis, and each context (no login needed: nothing private)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tornado.web import RequestHandler

from moi.compute import engine_roster, launched, scaling
from moi.core.errors import MoiError
from moi.core.lua import MAX_PRIORITY
from moi.jobs import connections, scheduler_seen
from moi.relay.websocket import hub_for
from moi.services import unloadable
from moi.storage import finished_counts, runtime
from moi.storage.redis_errors import reaching
from moi.storage.store import Store, store_for
from moi.web.api_handler import PREFIX, APIHandler, Problem

_BAND = 2**32  # a queue score is (MAX_PRIORITY - priority) * 2^32 + order (see moi.core.lua ENQUEUE)


class QueuesHandler(APIHandler):
    async def get(self) -> None:
        self.answer({"queues": await self.run(queues, self.store)})


def queues(store: Store) -> dict[str, Any]:
    """Per context: queued jobs by priority band (ZCOUNT over score ranges: no entry is read) and paused."""
    names = sorted(connections.context_specs())
    pipe = store.redis.pipeline(transaction=False)
    for name in names:
        key = store.keys.queue(name)
        top = MAX_PRIORITY
        pipe.zcount(key, "-inf", f"({top * _BAND}")  # priority above normal
        pipe.zcount(key, top * _BAND, f"({(top + 1) * _BAND}")  # normal
        pipe.zcount(key, (top + 1) * _BAND, "+inf")  # below normal
        pipe.zcard(store.keys.held(name))
        pipe.sismember(store.keys.paused, f"context:{name}")
    with reaching(store.url):
        counts = pipe.execute()
    answer = {}
    for index, name in enumerate(names):
        high, normal, low, held, paused = counts[index * 5 : index * 5 + 5]
        answer[name] = {"queued": {"high": high, "normal": normal, "low": low}, "held": held, "paused": bool(paused)}
    return answer


class ContextsHandler(APIHandler):
    async def get(self) -> None:
        self.answer({"contexts": await self.run(contexts, self.store, self.admin)})


def contexts(store: Store, admin: bool = True) -> dict[str, Any]:
    """Per context, as its dispatcher last saw it: online with its engines, or offline; its queue's depth;
    and whether an admin may add and remove its engines. A scheduler context's ``where`` and ``error`` (the
    cluster's account, host, key and known_hosts paths) are for admins only: blank for anyone else."""
    specs = connections.context_specs()
    names = sorted(specs)
    pipe = store.redis.pipeline(transaction=False)
    for name in names:
        pipe.get(store.keys.online(name))
        pipe.zcard(store.keys.queue(name))
    with reaching(store.url):
        values = pipe.execute()
    answer, embedded = {}, connections.settings().uses_embedded_cluster
    for index, name in enumerate(names):
        note, depth = values[2 * index], values[2 * index + 1]
        seen = json.loads(note) if note else {}
        answer[name] = {"online": bool(note), "engines": seen.get("engines"), "queued": depth}
        answer[name]["scalable"] = embedded or launched.cluster_file(specs[name]) is not None
        seen = scheduler_seen.read(store, specs[name])
        if seen is not None:  # a batch scheduler's context: no engines to add, its poller's last sight instead
            if not admin:
                seen.update(where="", error="")
            answer[name].update(scalable=False, scheduler=seen)
    return answer


class EnginesHandler(APIHandler):
    async def post(self, context: str, action: str) -> None:
        """One engine more or fewer (admins): of the embedded cluster, or of a cluster the operator started
        whose cluster file moi finds (its own launcher starts the engine: local, SSH, Slurm); a removed engine
        is retired, and stopped once idle. Answers how many are now wanted.
        ---
        responses:
          403: {description: not an admin}
          409: {description: "no cluster file moi can use, the context offline, at its bounds, or the launcher failed"}
        """
        if not self.admin:
            raise Problem(403, "forbidden", "adding and removing engines is for admins")
        current, specs = connections.settings(), connections.context_specs()
        if context not in specs:
            raise Problem(404, "not_found", f"Unknown context: {context[:80]}")
        by = 1 if action == "add" else -1
        if current.uses_embedded_cluster:
            started = runtime.read(Path(current.state_dir))
            count = await self.run(scaling.change, self.store, context, by, started.engines if started else 1)
        else:
            count = await self.run(launched.change, self.store, specs[context], by)
        self.answer({"context": context, "engines_wanted": count})


class ThroughputHandler(APIHandler):
    async def get(self) -> None:
        """Jobs ended per minute over the last hour, by status (admins): the operations page's chart."""
        if not self.admin:
            raise Problem(403, "forbidden", "throughput is for admins")
        self.answer({"minutes": await self.run(_last_hour, self.store)})


def _last_hour(store: Store) -> list[dict[str, Any]]:
    with reaching(store.url):
        return finished_counts.last_hour(store)


class WorkersHandler(APIHandler):
    async def get(self) -> None:
        """Engines per context: host, pid, state (idle, busy, lost), the job it runs (yours), jobs done."""
        visible = None if self.admin else {await self.my_group()}
        names = sorted(connections.context_specs())
        self.answer({"workers": await self.run(engine_roster.listing, self.store, names, visible)})


class UnloadableHandler(APIHandler):
    async def get(self) -> None:
        """Services that could not be loaded, with the error, where (an engine, a process reading
        ``[moi] services``) and when (admins): their jobs move on, their hooks fail (see ``moi.services.unloadable``).
        ---
        responses:
          403: {description: not an admin}
        """
        if not self.admin:
            raise Problem(403, "forbidden", "the services that cannot be loaded are for admins")
        found = await self.run(unloadable.read, self.store)
        self.answer({"services": [service.document() for service in found]})


class HealthHandler(RequestHandler):
    """Whether Redis answers, and each context's state: 200 when Redis does, 503 when it does not."""

    async def get(self) -> None:
        hub = hub_for(self.application)
        store = store_for(hub.url, hub.keys.prefix, hub.ttl)
        try:
            found = await asyncio.get_running_loop().run_in_executor(None, contexts, store)
        except MoiError:
            self.set_status(503)
            self.finish({"redis": "unreachable", "contexts": {}})
            return
        states = {name: "online" if seen["online"] else "offline" for name, seen in found.items()}
        self.finish({"redis": "ok", "contexts": states})


ROUTES = [
    (rf"{PREFIX}/queues", QueuesHandler),
    (rf"{PREFIX}/contexts", ContextsHandler),
    (rf"{PREFIX}/workers", WorkersHandler),
    (rf"{PREFIX}/throughput", ThroughputHandler),
    (rf"{PREFIX}/services/unloadable", UnloadableHandler),
    (rf"{PREFIX}/contexts/([^/]+)/engines/(add|remove)", EnginesHandler),
    (r"/healthz", HealthHandler),
]
