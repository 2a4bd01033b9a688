"""``/metrics`` in the Prometheus text format: one registry per app, read from live state at scrape time.

The serving runtime keeps plain counters (:class:`service.serving.runtime.RuntimeStats`); :class:`RuntimeCollector`
turns them into metric families when Prometheus scrapes, so the hot path never touches a metrics library.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.catalog.models import Job, JobStatus
from service.config import Settings
from service.serving.runtime import Runtime

__all__ = ["BATCH_BUCKETS", "CatalogCollector", "RuntimeCollector", "register_collectors"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class RuntimeCollector(Collector):
    """The runtime's provider, assembly cache and micro-batching figures."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt, s = self._runtime, self._runtime.stats
        info = GaugeMetricFamily(
            "kf_execution_provider_info",
            "ONNX Runtime execution provider serving predictions (value 1)",
            labels=["provider", "device"],
        )
        info.add_metric([rt.provider.name, rt.provider.device], 1)
        yield info
        cache = CounterMetricFamily("kf_assembly_cache", "Assembly cache lookups by result", labels=["result"])
        for result, value in (("hit", s.hits), ("miss", s.misses), ("shared", s.shared)):
            cache.add_metric([result], value)
        yield cache
        yield CounterMetricFamily("kf_assembly_cache_evictions", "Assemblies evicted from the cache", value=s.evictions)
        yield CounterMetricFamily("kf_assembly_compositions", "Graphs composed from parts", value=s.compositions)
        yield CounterMetricFamily("kf_assembly_loads", "Graphs loaded from the artifact store", value=s.loads)
        yield CounterMetricFamily(
            "kf_assembly_rebuilds", "Stored graphs refused (corrupt or missing) and composed again", value=s.rebuilds
        )
        yield GaugeMetricFamily("kf_assembly_cache_bytes", "Bytes held by cached assemblies", value=rt.cache_bytes)
        yield GaugeMetricFamily("kf_assembly_cache_entries", "Cached assemblies", value=len(rt.entries()))
        yield GaugeMetricFamily(
            "kf_assembly_cache_budget_bytes", "KF_CACHE_BYTES, the cache's budget", value=rt.settings.cache_bytes
        )
        p = s.parts
        yield CounterMetricFamily(
            "kf_resident_loads", "Factor sets made resident (each part loaded once)", value=s.resident_loads
        )
        yield GaugeMetricFamily("kf_resident_factor_sets", "Resident factor sets", value=len(rt.resident_sets()))
        # rows per CKN run = kf_ckn_rows_total / kf_ckn_runs_total; requests per CKN run likewise
        yield CounterMetricFamily(
            "kf_ckn_runs", "CKN part runs (one per micro-batch, across subsets)", value=p.ckn_runs
        )
        yield CounterMetricFamily("kf_ckn_rows", "Rows through the CKN part", value=p.ckn_rows)
        yield CounterMetricFamily("kf_ckn_requests", "Requests answered by CKN runs", value=p.ckn_requests)
        task_runs = CounterMetricFamily("kf_task_part_runs", "Task part runs", labels=["task"])
        task_rows = CounterMetricFamily("kf_task_part_rows", "Rows through each task part", labels=["task"])
        for task, n in sorted(dict(p.task_runs).items()):
            task_runs.add_metric([task], n)
            task_rows.add_metric([task], p.task_rows.get(task, 0))
        yield task_runs
        yield task_rows
        rows = dict(s.batch_rows)  # a copy: batches keep landing while we scrape
        buckets = [(str(b), sum(n for size, n in rows.items() if size <= b)) for b in BATCH_BUCKETS]
        buckets.append(("+Inf", sum(rows.values())))
        yield HistogramMetricFamily(
            "kf_batch_size",
            "Rows per session.run (micro-batch size)",
            buckets=buckets,
            sum_value=sum(size * n for size, n in rows.items()),
        )


class CatalogCollector(Collector):
    """Jobs by status and the queue depth (queued jobs per queue), read from the catalog at scrape time; with
    RQ, also the length of each Redis queue (``kf_redis_up`` says whether Redis answered)."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self._factory = factory
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("kf_jobs", "Factorization jobs in the catalog by status", labels=["status"])
        depth = GaugeMetricFamily("kf_queue_depth", "Jobs waiting to run, per queue", labels=["queue"])
        with self._factory() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            counts = {str(status): int(n) for status, n in rows}
            queued = session.execute(
                select(Job.queue, func.count()).where(Job.status == JobStatus.queued).group_by(Job.queue)
            ).all()
            for queue, n in queued:
                depth.add_metric([str(queue)], int(n))
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield depth
        if self._settings.redis_url:
            yield from self._redis()

    def _redis(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("kf_redis_up", "1 if Redis answered this scrape")
        lengths = GaugeMetricFamily("kf_rq_queue_length", "Jobs in each RQ queue", labels=["queue"])
        try:
            conn = redis.Redis.from_url(str(self._settings.redis_url), socket_connect_timeout=1, socket_timeout=1)
            for queue in (self._settings.queue, "gpu"):
                lengths.add_metric([queue], int(conn.llen(f"rq:queue:{queue}")))
            up.add_metric([], 1)
        except redis.RedisError:
            up.add_metric([], 0)
        yield up
        yield lengths


def register_collectors(
    registry: CollectorRegistry, runtime: Runtime, factory: sessionmaker[Session], settings: Settings
) -> list[Collector]:
    """Add the runtime and catalog collectors (at start-up); returns them for unregistering at shutdown."""
    collectors: list[Collector] = [RuntimeCollector(runtime), CatalogCollector(factory, settings)]
    for c in collectors:
        registry.register(c)
    return collectors
