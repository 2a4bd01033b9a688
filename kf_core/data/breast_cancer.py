"""scikit-learn's bundled Wisconsin breast-cancer table: a small real tabular dataset that needs no download.

569 samples of 30 numeric features (standardised to mean 0, std 1 per feature), ``x`` of shape ``(N, 30)``, and
two label columns: ``diagnosis`` ("malignant", "benign", sklearn's target) and ``radius``, the tertile of the
mean radius ("small", "medium", "large"; a property the features encode, so a teacher can learn it too).
"""

from __future__ import annotations

import numpy as np

from kf_core.data.base import ArrayDataset
from kf_core.errors import ConfigError

__all__ = ["load_breast_cancer"]


def load_breast_cancer(*, samples: int | None = None, seed: int = 0) -> ArrayDataset:
    """All 569 rows (``samples=None``) or a seeded random subset of ``samples`` of them."""
    # Imported here: sklearn.datasets takes about a second to import and most callers never need it.
    from sklearn.datasets import load_breast_cancer as _sklearn_breast_cancer

    bunch = _sklearn_breast_cancer()
    data = np.asarray(bunch.data, dtype=np.float64)
    target = np.asarray(bunch.target, dtype=np.int64)
    radius = data[:, list(bunch.feature_names).index("mean radius")]
    tertile = np.searchsorted(np.quantile(radius, [1 / 3, 2 / 3]), radius, side="right").astype(np.int64)
    x = ((data - data.mean(axis=0)) / data.std(axis=0)).astype(np.float32)
    n = len(x)
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= n:
            raise ConfigError(
                f"breast_cancer samples must be an integer in [1, {n}] (or None for all), got {samples!r}"
            )
        index = np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))
        x, target, tertile = x[index], target[index], tertile[index]
    return ArrayDataset(
        x=x,
        labels={"diagnosis": target, "radius": tertile},
        classes={"diagnosis": [str(c) for c in bunch.target_names], "radius": ["small", "medium", "large"]},
        name="breast_cancer",
        meta={"source": "breast_cancer", "samples": samples, "seed": seed},
    )
