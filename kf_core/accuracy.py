"""Evaluation helpers: per-task accuracy of teachers and factor networks on a held-out split, and the feature
extraction the disentanglement and transfer probes read (``z_c`` and every TSN mean ``mu_i``).

The probes and metrics themselves live in :mod:`kf_core.evaluation` (probe, leakage, disentangle, transfer);
:mod:`kf_core.evaluation.run` runs them on a run directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from kf_core.data.base import ArrayDataset
from kf_core.factor import FactorNet
from kf_core.tasks import TaskSpec, task_labels
from kf_core.teacher import Teacher

__all__ = ["collect_features", "factor_accuracy", "factor_features", "labelled_accuracy", "teacher_accuracy"]

Predict = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
_BATCH = 512


@torch.no_grad()
def labelled_accuracy(
    predict: Predict,
    data: ArrayDataset,
    labels: Mapping[str, np.ndarray],
    *,
    device: torch.device | None = None,
    batch: int = 512,
) -> dict[str, float]:
    """Accuracy of ``predict(x)[name].argmax(1)`` against ``labels[name]``; labels of -1 are skipped."""
    device = device or torch.device("cpu")
    correct = dict.fromkeys(labels, 0)
    count = dict.fromkeys(labels, 0)
    for start in range(0, len(data), batch):
        sl = slice(start, start + batch)
        logits = predict(torch.from_numpy(data.images(sl)).to(device))
        for name, y_all in labels.items():
            y = torch.from_numpy(y_all[sl]).to(device)
            keep = y >= 0
            correct[name] += int((logits[name].argmax(1)[keep] == y[keep]).sum())
            count[name] += int(keep.sum())
    return {k: correct[k] / count[k] if count[k] else float("nan") for k in labels}


def factor_accuracy(
    model: FactorNet, data: ArrayDataset, tasks: Sequence[TaskSpec], *, device: torch.device | None = None
) -> dict[str, float]:
    """Each task's factor network on ``data``; class-subset tasks are scored on samples of their classes."""
    was_training = model.training
    model.eval()
    labels = {t.name: task_labels(t, data.labels[t.label_column]) for t in tasks}
    try:
        return labelled_accuracy(model, data, labels, device=device)
    finally:
        model.train(was_training)


def teacher_accuracy(teacher: Teacher, data: ArrayDataset, tasks: Sequence[TaskSpec]) -> dict[str, float]:
    """The teacher on each task, read off its output (restricted to the task's classes for subsets)."""
    labels = {t.name: task_labels(t, data.labels[t.label_column]) for t in tasks}
    index = {t.name: t.class_index(teacher.output_sizes) for t in tasks}

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = teacher(x).logits
        return {t.name: out[t.output].cpu()[:, index[t.name]] for t in tasks}

    return labelled_accuracy(predict, data, labels)


def _inputs(data: ArrayDataset, index: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(data.images(index)).to(device)
    # channels_last roughly halves CPU convolution time (oneDNN); it changes strides only, never values.
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


@torch.inference_mode()
def collect_features(
    fn: Predict,
    data: ArrayDataset,
    index: np.ndarray | None = None,
    *,
    device: torch.device | None = None,
    batch: int = _BATCH,
) -> dict[str, np.ndarray]:
    """Run ``fn(x) -> {name: (B, ...) tensor}`` over ``data`` (or the samples at ``index``) and stack the results."""
    device = device or torch.device("cpu")
    index = np.arange(len(data)) if index is None else np.asarray(index)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(index), batch):
        for name, value in fn(_inputs(data, index[start : start + batch], device)).items():
            parts.setdefault(name, []).append(value.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def factor_features(
    model: FactorNet, data: ArrayDataset, index: np.ndarray | None = None, *, device: torch.device | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(z_c, {task: mu_i})`` of a factor network at inference (TSN means, no sampling)."""
    was_training = model.training
    model.eval()

    def encode(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"z_c": model.ckn(x)}
        out.update({f"mu/{n}": model.encode_task(n, x)[0] for n in model.task_names})
        return out

    try:
        feats = collect_features(encode, data, index, device=device)
    finally:
        model.train(was_training)
    return feats["z_c"], {n: feats[f"mu/{n}"] for n in model.task_names}
