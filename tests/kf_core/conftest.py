"""Shared fixtures for the export and assembly tests: one tiny five-task factor network, exported once.

Tasks (MLP on 1x8x8 inputs): ``low`` / ``high`` = digit classes 0-4 / 5-9 (disjoint class subsets of one output,
so they can be combined), ``seven`` = digit class 7 alone (overlaps ``high``), ``parity`` and ``size`` = whole
outputs of two other teacher heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kf_core.export import export_factor_set
from kf_core.factor import FactorConfig, FactorNet, NetSpec
from kf_core.tasks import TaskSpec

INPUT_SHAPE = (1, 8, 8)
OUTPUT_SIZES = {"digit": 10, "parity": 2, "size": 3}
CLASS_NAMES = {
    "digit": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "parity": ["even", "odd"],
    "size": ["small", "medium", "large"],
}
TASKS = [
    TaskSpec("low", "digit", (0, 1, 2, 3, 4)),
    TaskSpec("high", "digit", (5, 6, 7, 8, 9)),
    TaskSpec("seven", "digit", (7,)),
    TaskSpec("parity", "parity"),
    TaskSpec("size", "size"),
]
TASK_NAMES = [t.name for t in TASKS]


def make_factor_net(seed: int = 0) -> FactorNet:
    """The tiny factor network, randomly initialised (assembly must reproduce any weights, trained or not)."""
    torch.manual_seed(seed)
    net = FactorNet(
        input_shape=INPUT_SHAPE,
        tasks=TASKS,
        num_classes={t.name: t.num_classes(OUTPUT_SIZES) for t in TASKS},
        config=FactorConfig(
            ckn=NetSpec("mlp", {"hidden": [16, 16]}), tsn=NetSpec("mlp", {"hidden": [8]}), feature_dim=8
        ),
    )
    return net.eval()


@pytest.fixture(scope="session")
def factor_net() -> FactorNet:
    """The tiny five-task FactorNet in eval mode; do not modify it."""
    return make_factor_net()


@pytest.fixture(scope="session")
def factor_set(tmp_path_factory: pytest.TempPathFactory, factor_net: FactorNet) -> tuple[Path, dict[str, Any]]:
    """``(directory, manifest)`` of ``factor_net`` exported once; copy the directory before altering it."""
    out = tmp_path_factory.mktemp("factor_set")
    sample = torch.randn(4, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
    manifest = export_factor_set(factor_net, out, sample=sample, class_names=CLASS_NAMES, output_sizes=OUTPUT_SIZES)
    return out, manifest


@pytest.fixture()
def inputs() -> torch.Tensor:
    """A batch of 5 inputs for ``factor_net``."""
    return torch.randn(5, *INPUT_SHAPE, generator=torch.Generator().manual_seed(2))
