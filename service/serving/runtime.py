"""Serving runtime: factor set references, resident factor sets, the fused-assembly cache and micro-batchers.

    runtime = Runtime(settings, sessionmaker, store)          # picks the provider (service.serving.providers)
    resident, route = await runtime.route("dsprites:2", ["shape", "scale"])
    outputs = await runtime.run(resident, route, x)          # one queue per factor set, across its subsets

**Predictions** come from resident factor sets (:mod:`service.serving.resident`): per factor set and provider,
every part loaded once (single-flight, sha256-verified, warmed up) however many subsets are asked for: one
session over the routed graph on the CPU, one per part on CUDA. A subset is a route, built in microseconds;
nothing is composed and nothing is written on the request path. Requests for any subsets of one factor set share
one :class:`SharedBatcher`: the CKN runs once per batch.

**Fused assemblies** (``POST /v1/assemblies``, the portable product) are built by
:class:`service.serving.assemblies.AssemblyBuilder` and cached here by (factor set id, tasks in the factor set's
order, combined, provider). Concurrent requests for a missing key share one build (``state``: ``hit``, ``miss``,
``shared``).

**Cache.** Resident sets (each part counted once) and fused sessions share one LRU bounded by
``KF_CACHE_BYTES``; ``KF_PIN`` pins factor sets, which are never evicted.

Building runs on a thread pool, inference on one inference thread (:class:`InferenceLane`; ORT parallelises
inside a run with ``KF_INFER_THREADS`` intra-op threads, spinning between its operators unless ``KF_INFER_SPIN``
is off), so the event loop only parses, queues and answers; a lone short request on an idle server runs on the
loop itself (:mod:`service.serving.batching`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from kf_core import FactorParts, check_batch
from service.catalog.artifacts import ArtifactStore
from service.config import Settings
from service.errors import InvalidInputError
from service.serving.assemblies import AssemblyBuilder, CacheKey, LoadedAssembly
from service.serving.batching import InferenceLane, MicroBatcher, SharedBatcher
from service.serving.providers import CPU, Provider, choose_provider
from service.serving.refs import FactorSetInfo, is_immutable_ref, load_factor_set_info, materialize_parts
from service.serving.resident import OutputInfo, PartStats, ResidentSet, Route

# LoadedAssembly is defined in service.serving.assemblies; re-exported here, where callers meet it.
__all__ = ["LoadedAssembly", "OutputInfo", "Route", "Runtime", "RuntimeStats", "parse_pins"]

log = logging.getLogger(__name__)

_CUDA_BATCH_WAIT_MS = 2.0  # KF_BATCH_WAIT_MS's default on CUDA (0 on the CPU, see service.config)
# How long "name" (latest version) and "name@alias" stay resolved: a new version or a moved alias is served
# within this time on every replica. Ids and name:version never change.
_RESOLVE_TTL_S = 1.0

ResidentKey = tuple[uuid.UUID, str]


@dataclass
class RuntimeStats:
    """Counters of the cache and the builds (read by /metrics and the tests)."""

    hits: int = 0
    misses: int = 0
    shared: int = 0  # requests that waited for another request's build
    compositions: int = 0  # graphs composed from parts
    loads: int = 0  # graphs loaded from the artifact store instead
    rebuilds: int = 0  # stored graphs refused (corrupt or missing) and composed again
    evictions: int = 0
    batch_rows: dict[int, int] = field(default_factory=dict)  # batch size -> count
    resident_loads: int = 0  # factor sets made resident (every part loaded once)
    parts: PartStats = field(default_factory=PartStats)  # CKN and task-part runs, rows, requests


def parse_pins(spec: str) -> list[tuple[str, list[str] | None]]:
    """``KF_PIN``: ``ref[=task,task];ref...``: the factor sets to keep resident (tasks, if named, are checked)."""
    pins: list[tuple[str, list[str] | None]] = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        ref, _, tasks = item.partition("=")
        names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        pins.append((ref.strip(), names))
    return pins


class Runtime:
    """Owns the provider, the executors, the parts on disk and the assembly cache of one server process."""

    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        *,
        provider: Provider | None = None,
    ) -> None:
        self.settings = settings
        self._factory = factory
        self._store = store
        self.provider = provider or choose_provider(settings.device)
        self.threads = settings.infer_threads
        self.spin = settings.infer_spin
        wait_ms = settings.batch_wait_ms
        if wait_ms is None:
            wait_ms = 0.0 if self.provider.name == CPU else _CUDA_BATCH_WAIT_MS
        self.batch_wait_s = wait_ms / 1000
        self._lane = InferenceLane()  # the one inference thread every batcher runs its sessions on
        self._build_pool = ThreadPoolExecutor(2, thread_name_prefix="kf-assemble")
        self._parts_dir = Path(settings.work_dir).resolve() / "serving" / "parts"
        self._parts_lock = threading.Lock()
        self._cache: OrderedDict[CacheKey, LoadedAssembly] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Task[LoadedAssembly]] = {}
        self._pinned: set[CacheKey | ResidentKey] = set()
        self._resident: OrderedDict[ResidentKey, ResidentSet] = OrderedDict()
        self._loading: dict[ResidentKey, asyncio.Task[ResidentSet]] = {}
        self._resolved: dict[str, tuple[float, FactorSetInfo]] = {}
        self._resolving: dict[str, asyncio.Future[FactorSetInfo]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # set on first use: budget checks run on it
        self.stats = RuntimeStats()
        self.pins_ready = not parse_pins(settings.pin)
        self._builder = AssemblyBuilder(
            factory, store, self.provider, threads=self.threads, spin=self.spin, parts=self._parts, stats=self.stats
        )

    @property
    def cache_bytes(self) -> int:
        """Bytes under ``KF_CACHE_BYTES``: each resident set's parts once and every cached fused assembly."""
        return sum(e.size_bytes for e in self._cache.values()) + sum(r.size_bytes for r in self._resident.values())

    # ----------------------------------------------------------------- factor sets
    async def resolve(self, ref: str) -> FactorSetInfo:
        """A factor set by id, by ``name`` (its latest version), by ``name:version`` or by ``name@alias``.

        Answers from memory: ids and ``name:version`` never change; a bare name or ``name@alias`` is looked up
        again after ``_RESOLVE_TTL_S`` (a new version or a moved alias is served within that time; this process
        forgets at once what its own API changed, see :meth:`forget`). Concurrent lookups of one reference share
        one query.
        """
        hit = self._resolved.get(ref)
        if hit is not None and (hit[0] == float("inf") or time.monotonic() - hit[0] < _RESOLVE_TTL_S):
            return hit[1]
        pending = self._resolving.get(ref)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve_once(ref))
            self._resolving[ref] = pending
        return await asyncio.shield(pending)

    def drop(self, factor_set_id: uuid.UUID) -> None:
        """Forget a deleted factor set: its resident sessions, fused sessions, pins and resolved references.
        Requests already queued on it finish; the next ones get a 404."""
        for key in [k for k in self._cache if k[0] == factor_set_id]:
            del self._cache[key]
        for rkey in [k for k in self._resident if k[0] == factor_set_id]:
            del self._resident[rkey]
        self._pinned = {k for k in self._pinned if k[0] != factor_set_id}
        for ref in [r for r, (_, info) in self._resolved.items() if info.id == factor_set_id]:
            self._resolved.pop(ref, None)

    def in_use_sha256(self) -> set[str]:
        """The artifacts this process's caches were built from: stored graphs, manifests and parts."""
        used = {e.graph_sha256 for e in self._cache.values()}
        for resident in self._resident.values():
            fs = resident.factor_set
            used.add(fs.manifest_sha256)
            manifest = self._parts_dir / fs.manifest_sha256 / "manifest.json"
            try:
                data = json.loads(manifest.read_text())
                used |= {str(data["ckn"]["sha256"]), *(str(t["sha256"]) for t in data["tasks"].values())}
            except (OSError, ValueError, KeyError):
                pass
        return used

    def forget(self, name: str) -> None:
        """Drop the resolved movable references of the factor set ``name`` (after an alias changed here)."""
        for ref in [r for r in self._resolved if r == name or r.startswith(f"{name}@")]:
            self._resolved.pop(ref, None)

    async def _resolve_once(self, ref: str) -> FactorSetInfo:
        try:
            started = time.monotonic()
            info = await asyncio.get_running_loop().run_in_executor(self._build_pool, self._resolve_sync, ref)
        finally:
            del self._resolving[ref]
        immutable = is_immutable_ref(ref)
        if len(self._resolved) > 4096:
            self._resolved.clear()
        self._resolved[ref] = (float("inf") if immutable else started, info)
        return info

    def _resolve_sync(self, ref: str) -> FactorSetInfo:
        with self._factory() as session:
            return load_factor_set_info(session=session, ref=ref)

    # ----------------------------------------------------------------- resident factor sets (predictions)
    async def route(
        self, ref: str | FactorSetInfo, tasks: Sequence[str] | None = None, *, combined: bool = False
    ) -> tuple[ResidentSet, Route]:
        """The factor set's resident parts and the route of one task subset: no composition, no catalog write."""
        fs = ref if isinstance(ref, FactorSetInfo) else await self.resolve(ref)
        names = fs.canonical_tasks(tasks)
        resident = await self.resident(fs)
        return resident, resident.route(names, combined=combined)

    async def run(self, resident: ResidentSet, route: Route, x: np.ndarray) -> list[np.ndarray]:
        """The route's outputs (in ``route.outputs`` order) for a validated batch, batched across subsets."""
        assert resident.batcher is not None
        return await resident.batcher.submit(x, route)

    async def resident(self, fs: FactorSetInfo) -> ResidentSet:
        """The factor set's sessions on this provider, loaded once (concurrent first requests share one load)."""
        key: ResidentKey = (fs.id, self.provider.name)
        hit = self._resident.get(key)
        if hit is not None:
            self._resident.move_to_end(key)
            return hit
        pending = self._loading.get(key)
        if pending is None:
            # A task of its own, so a client that disconnects does not cancel a load others are waiting for.
            pending = asyncio.create_task(self._load_resident(key, fs))
            self._loading[key] = pending
        return await asyncio.shield(pending)

    def resident_sets(self) -> list[ResidentSet]:
        return list(self._resident.values())

    async def _load_resident(self, key: ResidentKey, fs: FactorSetInfo) -> ResidentSet:
        loop = self._loop = asyncio.get_running_loop()
        try:
            resident = await loop.run_in_executor(self._build_pool, self._load_resident_sync, fs)
        finally:
            del self._loading[key]
        resident.batcher = SharedBatcher(
            resident.run,
            max_batch=self.settings.max_batch,
            wait_s=self.batch_wait_s,
            lane=self._lane,
            on_batch=self._count_batch,
        )
        self._resident[key] = resident
        self.stats.resident_loads += 1
        self._enforce_budget(keep=key)
        return resident

    def _load_resident_sync(self, fs: FactorSetInfo) -> ResidentSet:
        resident = ResidentSet.load(
            self._parts(fs),
            fs,
            providers=self.provider.providers,
            threads=self.threads,
            spin=self.spin,
            stats=self.stats.parts,
        )
        if resident.provider != self.provider.name:
            log.warning("factor set %s runs on %s, not %s", fs.name, resident.provider, self.provider.name)
        return resident

    # ----------------------------------------------------------------- assemblies
    async def load_assembly(
        self, ref: str | FactorSetInfo, tasks: Sequence[str] | None = None, *, combined: bool = False
    ) -> tuple[LoadedAssembly, str]:
        """The ready entry for a task subset, and how it was found: ``hit``, ``miss`` (built) or ``shared``."""
        fs = ref if isinstance(ref, FactorSetInfo) else await self.resolve(ref)
        names = fs.canonical_tasks(tasks)
        key: CacheKey = (fs.id, names, combined, self.provider.name)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            self.stats.hits += 1
            return entry, "hit"
        pending = self._inflight.get(key)
        if pending is not None:
            self.stats.shared += 1
            return await asyncio.shield(pending), "shared"
        self.stats.misses += 1
        # A task of its own, so a client that disconnects does not cancel a build others are waiting for.
        task = asyncio.create_task(self._build_and_insert(key, fs, names, combined))
        self._inflight[key] = task
        return await asyncio.shield(task), "miss"

    async def _build_and_insert(
        self, key: CacheKey, fs: FactorSetInfo, names: tuple[str, ...], combined: bool
    ) -> LoadedAssembly:
        loop = asyncio.get_running_loop()
        try:
            entry = await loop.run_in_executor(self._build_pool, self._builder.build, key, fs, names, combined)
        finally:
            del self._inflight[key]
        entry.batcher = MicroBatcher(
            entry.run,
            max_batch=self.settings.max_batch,
            wait_s=self.batch_wait_s,
            lane=self._lane,
            on_batch=self._count_batch,
        )
        self._insert(entry)
        return entry

    async def infer(self, entry: LoadedAssembly, x: np.ndarray) -> list[np.ndarray]:
        """The entry's outputs (in ``entry.outputs`` order) for a validated batch, micro-batched."""
        assert entry.batcher is not None
        return await entry.batcher.submit(x)

    def check_batch(self, x: np.ndarray, target: LoadedAssembly | Route) -> np.ndarray:
        """``x`` as float32 if it fits the input and ``KF_MAX_BATCH``, else a clear error."""
        x = check_batch(x, target.input_shape)
        if len(x) > self.settings.max_batch:
            raise InvalidInputError(
                f"the batch holds {len(x)} samples, over the limit of {self.settings.max_batch} (KF_MAX_BATCH); "
                "split it into several requests"
            )
        return x

    async def warm_pins(self) -> None:
        """Load and pin every ``KF_PIN`` factor set (every subset of it is then warm); readiness waits for this."""
        for ref, tasks in parse_pins(self.settings.pin):
            try:
                fs = await self.resolve(ref)
                fs.canonical_tasks(tasks)
                await self.resident(fs)
            except Exception:
                log.exception("pinned factor set %s=%s failed to load; the server stays not ready", ref, tasks)
                return
            self._pinned.add((fs.id, self.provider.name))
        self.pins_ready = True

    def entries(self) -> list[LoadedAssembly]:
        return list(self._cache.values())

    def close(self) -> None:
        self._lane.close()
        self._build_pool.shutdown(wait=False, cancel_futures=True)
        self._builder.close()
        self._cache.clear()
        self._resident.clear()

    def _count_batch(self, _requests: int, rows: int) -> None:
        self.stats.batch_rows[rows] = self.stats.batch_rows.get(rows, 0) + 1

    def _insert(self, entry: LoadedAssembly) -> None:
        self._cache[entry.key] = entry
        self._enforce_budget(keep=entry.key)

    def _enforce_budget(self, *, keep: CacheKey | ResidentKey) -> None:
        """Evict least recently used fused sessions, then resident factor sets, until the budget holds."""
        budget = self.settings.cache_bytes
        for key in list(self._cache):
            if self.cache_bytes <= budget:
                return
            if key == keep or key in self._pinned:
                continue
            evicted = self._cache.pop(key)
            self.stats.evictions += 1
            log.info(
                "cache: evicted assembly %s %s (%d bytes)", evicted.factor_set.name, evicted.tasks, evicted.size_bytes
            )
        for rkey in list(self._resident):
            if self.cache_bytes <= budget:
                return
            if rkey == keep or rkey in self._pinned:
                continue
            gone = self._resident.pop(rkey)  # queued requests still hold it and finish
            self.stats.evictions += 1
            log.info("cache: evicted factor set %s (%d bytes)", gone.factor_set.name, gone.size_bytes)

    def _parts(self, fs: FactorSetInfo) -> FactorParts:
        with self._parts_lock:  # one thread copies a factor set's parts; the others then find them in place
            return materialize_parts(self._store, fs, self._parts_dir / fs.manifest_sha256)
