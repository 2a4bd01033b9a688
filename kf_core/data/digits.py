"""scikit-learn's bundled 8x8 handwritten digits: a tiny real dataset that needs no download.

1,797 grey images with 17 intensity levels (0..16), one label column ``digit`` with classes "0".."9".
Pixels are scaled to [0, 1] and then normalised with mean 0.5 and std 0.5, the dSprites convention, so
network inputs lie in [-1, 1].
"""

from __future__ import annotations

import numpy as np

from kf_core.data.base import ArrayDataset
from kf_core.errors import ConfigError

__all__ = ["load_digits"]

_MAX_INTENSITY = 16.0  # sklearn's digits are counts of set pixels in 4x4 blocks of a 32x32 bitmap


def load_digits(*, samples: int | None = None, seed: int = 0) -> ArrayDataset:
    """All 1,797 digits (``samples=None``) or a seeded random subset of ``samples`` of them."""
    # Imported here: sklearn.datasets takes about a second to import and most callers never need it.
    from sklearn.datasets import load_digits as _sklearn_digits

    bunch = _sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    target = np.asarray(bunch.target, dtype=np.int64)
    n = len(images)
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= n:
            raise ConfigError(f"digits samples must be an integer in [1, {n}] (or None for all), got {samples!r}")
        index = np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))
        images, target = images[index], target[index]
    x = (images / np.float32(_MAX_INTENSITY) - np.float32(0.5)) / np.float32(0.5)
    return ArrayDataset(
        x=x[:, None].astype(np.float32),
        labels={"digit": target},
        classes={"digit": [str(d) for d in range(10)]},
        name="digits",
        meta={"source": "digits", "samples": samples, "seed": seed},
    )
