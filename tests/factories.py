"""Plain factory functions for tests: tiny datasets and teachers that train in a second or two."""

from __future__ import annotations

import numpy as np

from kf_core.data.base import ArrayDataset
from kf_core.factor import FactorConfig, NetSpec
from kf_core.loop import TrainConfig
from kf_core.teacher import TorchTeacher
from kf_core.train import fit_teacher


def tiny_dataset(n: int = 96, *, seed: int = 0, side: int = 8) -> ArrayDataset:
    """Two label columns that are easy to learn from the pixels: ``bright`` (3 classes) and ``half`` (2)."""
    rng = np.random.default_rng(seed)
    bright = rng.integers(0, 3, n)
    half = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, side, side)).astype(np.float32)
    x += bright[:, None, None, None].astype(np.float32)
    x[half == 1, :, :, : side // 2] += 1.5
    return ArrayDataset(
        x=x,
        labels={"bright": bright, "half": half},
        classes={"bright": ["dark", "mid", "light"], "half": ["no", "yes"]},
        name="tiny",
    )


def tiny_train_config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 0, "eval_every": 0}
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def tiny_factor_config() -> FactorConfig:
    return FactorConfig(ckn=NetSpec("mlp", {"hidden": [32, 32]}), tsn=NetSpec("mlp", {"hidden": [8]}), feature_dim=16)


def tiny_teacher(data: ArrayDataset | None = None, *, epochs: int = 3) -> TorchTeacher:
    data = data or tiny_dataset()
    return fit_teacher(
        train=data,
        backbone=NetSpec("mlp", {"hidden": [32, 32]}),
        train_config=tiny_train_config(epochs=epochs),
    )
