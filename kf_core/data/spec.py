"""Name a dataset and its train/test split reproducibly, as a JSON-serialisable :class:`DataSpec`.

A factor set records the spec that produced its data, so the same images, labels and split can be
loaded again later (:func:`load_split`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kf_core.data.base import ArrayDataset, Split, split_dataset
from kf_core.data.breast_cancer import load_breast_cancer
from kf_core.data.digits import load_digits
from kf_core.data.dsprites import load_dsprites
from kf_core.data.folder import load_image_folder
from kf_core.data.npz import load_npz
from kf_core.errors import ConfigError

__all__ = ["SOURCES", "DataSpec", "load_dataset", "load_split"]

SOURCES = ("dsprites", "digits", "breast_cancer", "npz", "folder")
_FILE_SOURCES = ("npz", "folder")


@dataclass(frozen=True)
class DataSpec:
    """Where a dataset comes from, which samples of it, and how it is split."""

    source: str  # one of SOURCES: "dsprites", "digits", "breast_cancer", "npz" or "folder"
    path: str | None = None  # the .npz file or image folder; required for "npz" and "folder"
    samples: int | None = None  # a seeded random subset of this many samples; None = all of them
    seed: int = 42  # seed of the subset (ignored when samples is None)
    test_fraction: float = 0.3  # share of the samples in the test set
    split_seed: int = 42  # seed of the train/test permutation
    image_size: tuple[int, int] | None = None  # (height, width) images are resized to; "folder" only
    channels: int = 3  # 1 (grey), 3 (RGB) or 4 (RGBA); "folder" only
    labels: tuple[str, ...] | None = None  # label arrays to keep; "npz" only, None = all of them

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown data source {self.source!r}; known sources: {', '.join(SOURCES)}")
        if self.source in _FILE_SOURCES and not self.path:
            raise ConfigError(f"data source {self.source!r} needs a path (the .npz file or image folder)")
        if self.source == "folder" and self.image_size is None:
            raise ConfigError("data source 'folder' needs image_size = (height, width) to resize images to")
        if self.samples is not None and (
            isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1
        ):
            raise ConfigError(f"samples must be a positive integer or None (all samples), got {self.samples!r}")
        for name in ("seed", "split_seed", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if self.image_size is not None:
            if len(self.image_size) != 2:
                raise ConfigError(f"image_size must be (height, width), got {self.image_size!r}")
            object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if self.labels is not None:
            if isinstance(self.labels, str):
                raise ConfigError(f"labels must be a list of label array names, got the string {self.labels!r}")
            object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size is not None else None
        d["labels"] = list(self.labels) if self.labels is not None else None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DataSpec:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"unknown data spec field(s) {', '.join(unknown)}; known fields: {', '.join(known)}")
        if "source" not in d:
            raise ConfigError(f"a data spec needs a 'source'; known sources: {', '.join(SOURCES)}")
        return cls(**d)


def load_dataset(spec: DataSpec) -> ArrayDataset:
    """The whole dataset ``spec`` names (before splitting); its ``meta["spec"]`` records the spec."""
    if spec.source == "dsprites":
        ds = load_dsprites(samples=spec.samples, seed=spec.seed)
    elif spec.source == "digits":
        ds = load_digits(samples=spec.samples, seed=spec.seed)
    elif spec.source == "breast_cancer":
        ds = load_breast_cancer(samples=spec.samples, seed=spec.seed)
    else:
        assert spec.path is not None  # checked in DataSpec.__post_init__
        if spec.source == "npz":
            ds = load_npz(spec.path, labels=spec.labels)
        else:
            assert spec.image_size is not None
            ds = load_image_folder(spec.path, image_size=spec.image_size, channels=spec.channels)
        if spec.samples is not None:
            ds = _subsample(ds, spec.samples, spec.seed)
    ds.meta["spec"] = spec.to_json()
    return ds


def load_split(spec: DataSpec) -> Split:
    """Load the dataset ``spec`` names and split it into train and test sets."""
    return split_dataset(load_dataset(spec), test_fraction=spec.test_fraction, seed=spec.split_seed)


def _subsample(ds: ArrayDataset, samples: int, seed: int) -> ArrayDataset:
    if samples > len(ds):
        raise ConfigError(f"{ds.name}: samples={samples} but the dataset has only {len(ds)}; lower samples")
    return ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), size=samples, replace=False)))
