"""``GET /metrics``: moi's figures in the Prometheus text format, from ``prometheus_client``.

Everything is read from a few keys, never by scanning jobs: the counts and
histograms the ending writes keep (``moi.storage.finished_counts``), the queues' depths by
priority band (ZCOUNT), the running set's size, the workers (``moi.compute.engine_roster``),
the contexts' online notes, the mail counters,
the long-lived loops' failures (``moi.storage.loops``) and the services that could not be loaded
(``moi.services.unloadable``, one gauge each, its error a label). Sockets and relay frames are
this server process's own. A registry is built per scrape, so importing this
module registers nothing anywhere.

It is for operators: an admin token (``moi token create --user ops --admin``),
as Prometheus sends it with ``authorization: {credentials: ...}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from moi.compute import engine_roster
from moi.jobs import connections
from moi.relay.websocket import hub_for, open_sockets
from moi.services import unloadable
from moi.services.unloadable import Unloadable
from moi.storage import loops
from moi.storage.finished_counts import BUCKETS, SEPARATOR, SPANS
from moi.storage.redis_errors import reaching
from moi.storage.store import Store
from moi.web.api_handler import APIHandler, Problem
from moi.web.api_ops import contexts, queues

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Figures:
    """What one scrape read from Redis."""

    tally: dict[str, str]
    histograms: dict[str, dict[str, str]]
    running: int
    queues: dict[str, Any]
    contexts: dict[str, Any]
    workers: list[dict[str, Any]]
    mail_waiting: int
    mail_failed: int
    loop_records: dict[str, loops.Record]
    unloadable: list[Unloadable]


def read(store: Store) -> Figures:
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(keys.tally)
    for span in SPANS:
        pipe.hgetall(keys.histogram(span))
    pipe.scard(keys.running)
    pipe.llen(keys.mail)
    pipe.get(keys.mail_failed)
    pipe.hgetall(keys.loops)
    pipe.hgetall(keys.services_unloadable)
    with reaching(store.url):
        tally, *spans, running, waiting, failed, loop_records, not_loaded = pipe.execute()
    names = sorted(connections.context_specs())
    return Figures(
        tally=tally,
        histograms=dict(zip(SPANS, spans, strict=True)),
        running=int(running),
        queues=queues(store),
        contexts=contexts(store),
        workers=engine_roster.listing(store, names, None),
        mail_waiting=int(waiting),
        mail_failed=int(failed or 0),
        loop_records=loops.parse(loop_records),
        unloadable=unloadable.from_hash(not_loaded),
    )


def families(figures: Figures, sockets: int, frames: int) -> Iterator[Metric]:
    ended = CounterMetricFamily("moi_jobs_ended", "Jobs that reached a final status", labels=["status", "service"])
    for field, count in sorted(figures.tally.items()):
        status, _, service = field.partition(SEPARATOR)
        ended.add_metric([status, service], float(count))
    yield ended
    yield _gauge("moi_jobs_running", "Jobs an engine has taken and not finished", figures.running)
    queued = GaugeMetricFamily("moi_jobs_queued", "Jobs waiting in a queue", labels=["context", "priority"])
    held = GaugeMetricFamily("moi_jobs_paused", "Jobs held back by a pause", labels=["context"])
    paused = GaugeMetricFamily("moi_queue_paused", "1 when the context's queue is paused", labels=["context"])
    for context, queue in sorted(figures.queues.items()):
        for band, count in queue["queued"].items():
            queued.add_metric([context, band], count)
        held.add_metric([context], queue["held"])
        paused.add_metric([context], float(queue["paused"]))
    yield from (queued, held, paused)
    online = GaugeMetricFamily("moi_context_online", "1 when the context's cluster is reachable", labels=["context"])
    for context, seen in sorted(figures.contexts.items()):
        online.add_metric([context], float(seen["online"]))
    yield online
    yield _engines(figures.workers)
    for span, why in (("wait", "submitted to started"), ("run", "started to ended")):
        yield _histogram(f"moi_job_{span}_seconds", f"Seconds a job took from {why}", figures.histograms[span])
    yield _gauge("moi_websocket_clients", "Websockets open on this server", sockets)
    frames_sent = CounterMetricFamily("moi_relay_frames", "Frames this server sent over its websockets")
    frames_sent.add_metric([], frames)
    yield frames_sent
    yield _gauge("moi_mail_waiting", "Mails waiting to be sent", figures.mail_waiting)
    lost = CounterMetricFamily("moi_mail_failed", "Mails given up on after every try")
    lost.add_metric([], figures.mail_failed)
    yield lost
    yield from _loops(figures.loop_records)
    yield _unloadable(figures.unloadable)


def _loops(records: dict[str, loops.Record]) -> Iterator[Metric]:
    errors = CounterMetricFamily("moi_loop_errors", "Items a long-lived loop failed on and passed", labels=["loop"])
    restarts = CounterMetricFamily("moi_loop_restarts", "A loop's thread found dead and restarted", labels=["loop"])
    for name, record in records.items():
        errors.add_metric([name], record.errors)
        restarts.add_metric([name], record.restarts)
    yield from (errors, restarts)


def _unloadable(found: list[Unloadable]) -> GaugeMetricFamily:
    """1 per service that could not be loaded, its error and where in its labels (an info-style gauge)."""
    gauge = GaugeMetricFamily(
        "moi_service_unloadable",
        "1 for each service that could not be loaded (its jobs move on; its retention hooks fail)",
        labels=["entry", "service", "where", "error"],
    )
    for service in found:
        gauge.add_metric([service.entry, service.service, service.where, service.error], 1.0)
    return gauge


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _engines(found: list[dict[str, Any]]) -> GaugeMetricFamily:
    engines = GaugeMetricFamily("moi_engines", "Engines by state", labels=["context", "state"])
    counts: dict[tuple[str, str], int] = {}
    for worker in found:
        key = (worker["context"], worker["state"])
        counts[key] = counts.get(key, 0) + 1
    for (context, state), count in sorted(counts.items()):
        engines.add_metric([context, state], count)
    return engines


def _histogram(name: str, text: str, kept: dict[str, str]) -> HistogramMetricFamily:
    """Prometheus's cumulative buckets from moi's per-bucket counts."""
    buckets, total = [], 0.0
    for bound in BUCKETS:
        label = "+Inf" if math.isinf(bound) else repr(bound)
        total += float(kept.get(label, 0))
        buckets.append((label, total))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=float(kept.get("sum", 0)))


class _Scraped(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def render(figures: Figures, sockets: int, frames: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scraped(list(families(figures, sockets, frames))))
    return generate_latest(registry)


class MetricsHandler(APIHandler):
    async def get(self) -> None:
        """Prometheus text format: jobs, queues, engines, durations, sockets, frames, mail (admins)."""
        if not self.admin:
            raise Problem(403, "forbidden", "metrics are for admins: send an admin token")
        figures = await self.run(read, self.store)
        hub = hub_for(self.application)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(render(figures, open_sockets(self.application), hub.frames_sent))


ROUTES = [(r"/metrics", MetricsHandler)]
