"""``/metrics`` in the Prometheus text format: one registry per app, read from live state at scrape time.

The serving runtime keeps plain counters (:class:`service.runtime.RuntimeStats`); :class:`RuntimeCollector`
turns them into metric families when Prometheus scrapes, so the hot path never touches a metrics library.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.runtime import Runtime

__all__ = ["BATCH_BUCKETS", "RuntimeCollector", "make_registry"]

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
        rows = dict(s.batch_rows)  # a copy: batches keep landing while we scrape
        buckets = [(str(b), sum(n for size, n in rows.items() if size <= b)) for b in BATCH_BUCKETS]
        buckets.append(("+Inf", sum(rows.values())))
        yield HistogramMetricFamily(
            "kf_batch_size",
            "Rows per session.run (micro-batch size)",
            buckets=buckets,
            sum_value=sum(size * n for size, n in rows.items()),
        )


def make_registry(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry
