"""Held-out samples of a factor set: the test split of the data it was trained on, with each task's true label.

The console's playground offers them as inputs; scripts use them to try a factor set without data of their own.
The split is rebuilt from the data spec the factor set records (built-in generators regenerate it, uploaded
``.npz`` files are read from the artifact store, verified), and the last few splits are kept in memory so
paging through samples does not regenerate them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from kf_core import DataSpec, load_split
from service.catalog.artifacts import ArtifactStore
from service.catalog.models import FactorSet
from service.errors import InvalidInputError
from service.jobs.spec import ARTIFACT_PREFIX

__all__ = ["factor_set_samples"]

_CACHE_SPLITS = 4
_cache: OrderedDict[str, tuple[Any, tuple[float, float]]] = OrderedDict()
_lock = threading.Lock()


def factor_set_samples(
    *, fs: FactorSet, store: ArtifactStore, work_dir: Path, offset: int, limit: int
) -> dict[str, Any]:
    """Samples ``offset .. offset+limit`` of ``fs``'s test split: inputs (N, *input shape) as nested lists, the range of
    the split's values (to map drawings onto), and per task the class index of each sample (None where a
    class-subset task does not cover the sample's class)."""
    test, (lo, hi) = _test_split(fs, store, work_dir)
    count = len(test)
    if offset >= count:
        raise InvalidInputError(f"offset {offset} is past the last sample; the test split has {count} (0..{count - 1})")
    index = np.arange(offset, min(count, offset + limit))
    x = test.images(index)
    labels: dict[str, list[int | None]] = {}
    for task in fs.config.get("tasks") or []:
        factor = next((f for f in fs.factors if f.task == task["name"]), None)
        column = task.get("label") or task.get("output") or task["name"]
        if factor is None or column not in test.labels:
            continue
        position = {int(c): i for i, c in enumerate(factor.classes)}
        labels[factor.task] = [position.get(int(v)) for v in test.labels[column][index]]
    return {
        "factor_set": {"id": fs.id, "name": fs.name, "version": fs.version},
        "dataset": fs.dataset.name,
        "split": "test",
        "count": count,
        "offset": offset,
        "shape": list(x.shape),
        "value_range": [lo, hi],
        "inputs": x.astype(np.float32).tolist(),
        "labels": labels,
    }


def _test_split(fs: FactorSet, store: ArtifactStore, work_dir: Path) -> tuple[Any, tuple[float, float]]:
    """The test split (an ``ArrayDataset``) and the range of its values, from the cache or rebuilt."""
    doc = dict(fs.config.get("data") or {})
    if not doc:
        raise InvalidInputError(f"factor set {fs.name}:{fs.version} records no data spec; it has no samples to offer")
    key = json.dumps(doc, sort_keys=True)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    spec = DataSpec.from_json(doc)
    if spec.source == "npz":
        sha = (spec.path or "").removeprefix(ARTIFACT_PREFIX)
        local = work_dir / "samples" / f"{sha}.npz"
        if not local.exists():
            store.copy_to(sha, local)  # atomic and sha256-verified
        spec = dataclasses.replace(spec, path=str(local))
    test = load_split(spec).test
    head = test.images(np.arange(min(len(test), 512)))
    entry = (test, (float(np.min(head)), float(np.max(head))))
    with _lock:
        _cache[key] = entry
        while len(_cache) > _CACHE_SPLITS:
            _cache.popitem(last=False)
    return entry
