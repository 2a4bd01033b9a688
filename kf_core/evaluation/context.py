"""What every measurement of ``kf evaluate`` shares: the evaluation config, the probe subsamples, the labels and
factors at them, and the key that identifies the cached comparison models (see :mod:`kf_core.evaluation.run`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kf_core.accuracy import collect_features
from kf_core.data.base import Split
from kf_core.loop import Callback, data_fingerprint, fingerprint, resolve_device
from kf_core.recipes import Recipe
from kf_core.tasks import TaskSpec, task_labels
from kf_core.teacher import Teacher

__all__ = ["EvalConfig", "EvalContext", "claim_cache", "fast", "make_context"]


@dataclass(frozen=True)
class EvalConfig:
    """How the probes and metrics are computed."""

    probe_train: int = 5000  # training images the probes and DCI are fitted on (seeded subsample)
    probe_test: int = 5000  # test images they are scored on, and MIG is computed on
    probe_l2: float = 1e-4  # L2 weight of the linear probes (keeps separable fits bounded)
    probe_max_iter: int = 100  # L-BFGS iterations per probe
    mig_bins: int = 20  # equal-width bins per latent for MIG's mutual information
    dci_alpha: float | None = None  # lasso penalty of DCI's importances; None: 3 / sqrt(probe_train)
    seed: int = 0  # seed of the subsamples
    # torch threads while measuring (not while training the comparison models); None keeps torch's setting.
    # 1 by default: on a busy 2-core machine two threads that wait for each other made inference 3x slower,
    # while on an idle one a second thread saves well under half.
    threads: int | None = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if k >= n else np.sort(rng.choice(n, size=k, replace=False))


def fast(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` on ``device`` in channels_last, which halves CPU convolution time; the values do not change."""
    return module.to(device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload,no-any-return]


def claim_cache(directory: Path, key: str) -> None:
    """Before training into ``directory``: drop a half-trained checkpoint that a different key left there.

    The training loop's own fingerprint covers data, tasks and config but not the teacher's weights, so an
    interrupted run for another teacher of the same shape would otherwise be resumed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "training.key"
    if not marker.exists() or marker.read_text() != key:
        (directory / "checkpoint.pt").unlink(missing_ok=True)
    marker.write_text(key)


def _teacher_key(teacher: Teacher, x: np.ndarray) -> str:
    """Identify a teacher by what it computes: its logits on a few inputs, rounded against float noise."""
    out = teacher(torch.from_numpy(x)).logits
    return fingerprint({k: (np.round(v.float().cpu().numpy(), 3) + 0.0).tolist() for k, v in sorted(out.items())})


@dataclass
class EvalContext:
    """Everything the evaluation sections share: data, probe subsamples, labels and the cache key."""

    out: Path
    recipe: Recipe
    tasks: list[TaskSpec]
    teacher: Teacher
    split: Split
    cfg: EvalConfig
    device: torch.device
    itr: np.ndarray  # training images the probes are fitted on
    ite: np.ndarray  # test images they are scored on
    y_tr: dict[str, np.ndarray]  # task labels at itr (-1 outside a class-subset task)
    y_te: dict[str, np.ndarray]
    columns: list[str]  # the ground-truth factors (label columns), each once
    f_tr: np.ndarray  # (len(itr), factors)
    f_te: np.ndarray
    key: list[Any]  # identifies recipe, data and teacher, for the cached comparison models
    callbacks: Callable[[str], Sequence[Callback]]
    say: Callable[[str], None]
    timings: dict[str, float]
    trained: dict[str, float]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one measurement, with the configured number of torch threads."""
        before = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            torch.set_num_threads(before)
        self.timings[name] = time.perf_counter() - t0
        self.say(f"  {name}: {self.timings[name]:.1f} s")

    def features(
        self, fn: Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``fn``'s named features of the probe subsamples: ``{name: (train, test)}``."""
        tr = collect_features(fn, self.split.train, self.itr, device=self.device)
        te = collect_features(fn, self.split.test, self.ite, device=self.device)
        return {k: (tr[k], te[k]) for k in tr}

    def probes(self) -> dict[str, Any]:
        return {"l2": self.cfg.probe_l2, "max_iter": self.cfg.probe_max_iter}


def make_context(
    *,
    out: Path,
    recipe: Recipe,
    split: Split,
    tasks: list[TaskSpec],
    teacher: Teacher,
    config: EvalConfig,
    callbacks: Callable[[str], Sequence[Callback]] | None,
    log: Callable[[str], None] | None,
) -> EvalContext:
    """Draw the seeded probe subsamples and read the task labels and ground-truth factors at them."""
    rng = np.random.default_rng(config.seed)
    itr = _subsample(len(split.train), config.probe_train, rng)
    ite = _subsample(len(split.test), config.probe_test, rng)
    columns = list(dict.fromkeys(t.label_column for t in tasks))
    return EvalContext(
        out=out,
        recipe=recipe,
        tasks=tasks,
        teacher=teacher,
        split=split,
        cfg=config,
        device=resolve_device(recipe.train.device),
        itr=itr,
        ite=ite,
        y_tr={t.name: task_labels(t, split.train.labels[t.label_column][itr]) for t in tasks},
        y_te={t.name: task_labels(t, split.test.labels[t.label_column][ite]) for t in tasks},
        columns=columns,
        f_tr=np.stack([split.train.labels[c][itr] for c in columns], axis=1),
        f_te=np.stack([split.test.labels[c][ite] for c in columns], axis=1),
        key=[
            recipe.train.to_json(),
            data_fingerprint(split.train),
            _teacher_key(teacher, split.train.images(slice(0, 16))),
        ],
        callbacks=callbacks or (lambda _name: ()),
        say=log or (lambda _msg: None),
        timings={},
        trained={},
    )
