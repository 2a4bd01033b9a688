"""Fused assemblies: one ONNX graph per task subset, composed from the parts, verified, stored and loaded.

    builder = AssemblyBuilder(factory, store, provider, threads=2, parts=runtime_parts, stats=stats)
    entry = builder.build(key, fs, ("shape", "scale"), combined=False)   # on a worker thread

The portable product of ``POST /v1/assemblies`` (download, edge and offline use) and the reference the served
outputs are tested against. If the catalog already holds the graph of a subset, its bytes are read from the
artifact store, verified and loaded: no composition. A stored graph that fails its sha256 check is not served:
it is rebuilt from the verified parts and the good bytes replace the bad file. On the CPU the session is built
from ORT-optimised per-part pieces (:func:`kf_core.assemble_session`) while the portable graph is composed and
stored beside it; the entry is returned once both are done, so the id it reports is always in the catalog.

The cache around the builder (keys, single flight, LRU budget) is the runtime's: :mod:`service.serving.runtime`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from kf_core import FactorParts, assemble_bytes, assemble_session, describe_assembly, ort
from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore
from service.catalog.db import session_scope
from service.errors import ArtifactError
from service.serving.batching import MicroBatcher
from service.serving.providers import CPU, Provider
from service.serving.refs import FactorSetInfo
from service.serving.resident import OutputInfo, group_heads

if TYPE_CHECKING:
    from service.serving.runtime import RuntimeStats

__all__ = ["AssemblyBuilder", "CacheKey", "LoadedAssembly"]

log = logging.getLogger(__name__)

ONNX = "application/onnx"

CacheKey = tuple[uuid.UUID, tuple[str, ...], bool, str]  # (factor set id, tasks, combined, provider)


@dataclass
class LoadedAssembly:
    """A fused assembly loaded for serving: the id of its catalog row (:class:`~service.catalog.models.Assembly`),
    its ONNX Runtime session and its batcher."""

    key: CacheKey
    assembly_id: uuid.UUID
    factor_set: FactorSetInfo
    tasks: tuple[str, ...]
    combined: bool
    graph_sha256: str
    size_bytes: int
    source: str  # "composed" (built here) or "stored" (loaded from the artifact store)
    session: Any
    input_name: str
    input_shape: list[int | None]  # [None, *one sample's shape]
    outputs: list[OutputInfo]
    batcher: MicroBatcher | None = None
    build_ms: float = 0.0
    provider: str = ""  # what the session really runs on: session.get_providers()[0]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        result: list[np.ndarray] = self.session.run([o.name for o in self.outputs], {self.input_name: x})
        return result

    def heads(self) -> list[tuple[str, OutputInfo, OutputInfo]]:
        return group_heads(self.outputs)


class AssemblyBuilder:
    """Builds the :class:`LoadedAssembly` of a task subset (called on the runtime's build threads)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        provider: Provider,
        *,
        threads: int | None,
        spin: bool = True,
        parts: Callable[[FactorSetInfo], FactorParts],
        stats: RuntimeStats,
    ) -> None:
        self._factory = factory
        self._store = store
        self.provider = provider
        self.threads = threads
        self.spin = spin
        self._parts = parts
        self.stats = stats
        self._store_pool = ThreadPoolExecutor(2, thread_name_prefix="kf-store")

    def close(self) -> None:
        self._store_pool.shutdown(wait=False, cancel_futures=True)

    def build(self, key: CacheKey, fs: FactorSetInfo, names: tuple[str, ...], combined: bool) -> LoadedAssembly:
        started = time.perf_counter()
        tasks_key = ",".join(sorted(names))
        with self._factory() as session:
            row = catalog.find_assembly(session=session, factor_set_id=fs.id, tasks_key=tasks_key, combined=combined)
            stored = (row.id, row.graph_artifact.sha256, row.graph_artifact.size_bytes) if row is not None else None
        session_obj: Any = None
        source = "stored"
        if stored is not None:
            try:
                session_obj = self._stored_session(stored[1], stored[2])
                assembly_id, sha, size = stored
                self.stats.loads += 1
            except ArtifactError as exc:
                log.warning("stored graph of assembly %s refused (%s); rebuilding it from the parts", stored[0], exc)
                self.stats.rebuilds += 1
        if session_obj is None:
            source = "composed"
            parts = self._parts(fs)
            # Storing (portable graph, artifact, catalog row) runs beside the session's creation: two cores, half
            # the wait. The request returns once both are done, so the id it reports is always in the catalog.
            stored_future = self._store_pool.submit(self._store_graph, parts, fs, names, combined)
            if self.provider.name == CPU:
                session_obj = assemble_session(
                    parts, list(names), combined=combined, threads=self.threads, spin=self.spin
                )
                assembly_id, sha, size = stored_future.result()
            else:
                assembly_id, sha, size = stored_future.result()
                session_obj = self._stored_session(sha, size)
        entry = entry_from_session(key, assembly_id, fs, names, combined, sha, size, source, session_obj)
        entry.provider = str(session_obj.get_providers()[0])
        if entry.provider != self.provider.name:
            log.warning(
                "assembly %s runs on %s, not %s: ONNX Runtime fell back for this graph",
                assembly_id,
                entry.provider,
                self.provider.name,
            )
        # Warm-up: the first run allocates ORT's buffers and (on CUDA) initialises kernels; no client pays for it.
        entry.run(np.zeros((1, *(d or 1 for d in entry.input_shape[1:])), dtype=np.float32))
        entry.build_ms = 1000 * (time.perf_counter() - started)
        return entry

    def _store_graph(
        self, parts: FactorParts, fs: FactorSetInfo, names: tuple[str, ...], combined: bool
    ) -> tuple[uuid.UUID, str, int]:
        data = assemble_bytes(parts, list(names), combined=combined)
        put = self._store.put_bytes(data, durable=False)  # derived: a lost or torn file is rebuilt on read
        self.stats.compositions += 1
        with session_scope(self._factory) as session:
            assembly_id = catalog.record_assembly(
                session=session, factor_set_id=fs.id, tasks=names, combined=combined, stored=put, media_type=ONNX
            )
        return assembly_id, put.sha256, put.size

    def _stored_session(self, sha256: str, size: int) -> Any:
        """A session over a graph in the artifact store (verified), optimised by ORT as it is created."""
        data = self._store.read_bytes(sha256, size=size)
        return ort.create_session(
            data, providers=self.provider.providers, options=ort.session_options(self.threads, spin=self.spin)
        )


def entry_from_session(
    key: CacheKey,
    assembly_id: uuid.UUID,
    fs: FactorSetInfo,
    names: tuple[str, ...],
    combined: bool,
    sha: str,
    size: int,
    source: str,
    session: Any,
) -> LoadedAssembly:
    desc = describe_assembly(session)
    outputs: list[OutputInfo] = []
    for head in desc.heads:
        if head.probs is None:
            raise ArtifactError(f"assembly {assembly_id} was built without probability outputs; it cannot be served")
        outputs += [
            OutputInfo(head.logits, head.name, "logits", head.class_names),
            OutputInfo(head.probs, head.name, "probs", head.class_names),
        ]
    return LoadedAssembly(
        key=key,
        assembly_id=assembly_id,
        factor_set=fs,
        tasks=names,
        combined=combined,
        graph_sha256=sha,
        size_bytes=size,
        source=source,
        session=session,
        input_name=desc.input_name,
        input_shape=desc.input_shape,
        outputs=outputs,
    )
