"""In-memory labelled input arrays, the one data shape the engine trains on.

Every loader (dSprites, digits, npz files, image folders, CSV/Parquet tables) returns an :class:`ArrayDataset`:
inputs ``(N, *sample_shape)`` (vectors ``(N, D)``, images ``(N, C, H, W)``, any rank >= 2) and one integer label
array per label column (a dSprites factor, the digit class, ...). Tasks read label columns by name (see
:mod:`kf_core.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kf_core.errors import DataError, LabelError, UnknownTaskError

__all__ = ["ArrayDataset", "Split", "split_dataset"]


@dataclass
class ArrayDataset:
    """Inputs plus named integer label columns, all of the same length."""

    # (N, *sample_shape), e.g. (N, D) or (N, C, H, W): float32, or compact raw values (uint8/bool) mapped by scale/shift
    x: np.ndarray
    labels: dict[str, np.ndarray]  # label column -> int64 (N,), values in [0, len(classes[col]))
    classes: dict[str, list[str]]  # label column -> class names, index = label value
    name: str = "dataset"
    meta: dict[str, object] = field(default_factory=dict)  # JSON-serialisable provenance (seed, source, ...)
    scale: float = 1.0  # network input = x * scale + shift (lets the full dSprites grid live as 3 GB of uint8)
    shift: float = 0.0

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(
                f"{self.name}: inputs must be (N, *sample_shape), e.g. (N, D) vectors or (N, C, H, W) images; "
                f"got shape {tuple(self.x.shape)}"
            )
        if self.x.dtype not in (np.float32, np.uint8, np.bool_):
            self.x = self.x.astype(np.float32)
        n = len(self.x)
        for col, y in self.labels.items():
            if y.ndim != 1 or len(y) != n:
                raise LabelError(
                    f"{self.name}: label array {col!r} has shape {tuple(y.shape)} but there are {n} images; "
                    "give one integer label per image"
                )
            if not np.issubdtype(y.dtype, np.integer):
                raise LabelError(f"{self.name}: label array {col!r} must hold integers, got dtype {y.dtype}")
            if col not in self.classes:
                raise LabelError(f"{self.name}: label array {col!r} has no class names")
            k = len(self.classes[col])
            if n and (int(y.min()) < 0 or int(y.max()) >= k):
                raise LabelError(
                    f"{self.name}: label array {col!r} has values in [{int(y.min())}, {int(y.max())}] "
                    f"but only {k} classes; labels must be in [0, {k - 1}]"
                )
            self.labels[col] = y.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: ``(D,)``, ``(C, H, W)``, ..."""
        return tuple(int(s) for s in self.x.shape[1:])

    def images(self, index: np.ndarray | slice | None = None) -> np.ndarray:
        """Network-ready float32 images (all of them, or those at ``index``)."""
        raw = self.x if index is None else self.x[index]
        out = raw.astype(np.float32)
        if self.scale != 1.0 or self.shift != 0.0:
            out = out * np.float32(self.scale) + np.float32(self.shift)
        return out

    def num_classes(self, column: str) -> int:
        return len(self.classes[self.column(column)])

    def column(self, column: str) -> str:
        """Return ``column`` if it is a label column, else raise :class:`UnknownTaskError`."""
        if column not in self.labels:
            raise UnknownTaskError("label column", column, list(self.labels))
        return column

    def subset(self, index: np.ndarray) -> ArrayDataset:
        return ArrayDataset(
            x=self.x[index],
            labels={k: v[index] for k, v in self.labels.items()},
            classes=self.classes,
            name=self.name,
            meta=dict(self.meta),
            scale=self.scale,
            shift=self.shift,
        )


@dataclass
class Split:
    """A train/test split of one dataset."""

    train: ArrayDataset
    test: ArrayDataset


def split_dataset(ds: ArrayDataset, *, test_fraction: float = 0.3, seed: int = 42) -> Split:
    """Seeded random split: a fraction ``test_fraction`` of the samples goes to the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if len(ds) < 2:
        raise DataError(f"{ds.name}: need at least 2 samples to split, got {len(ds)}")
    order = np.random.default_rng(seed).permutation(len(ds))
    n_test = min(max(1, round(len(ds) * test_fraction)), len(ds) - 1)
    return Split(train=ds.subset(np.sort(order[n_test:])), test=ds.subset(np.sort(order[:n_test])))
