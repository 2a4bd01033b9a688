"""Evaluation: per-task accuracy of teachers and factor networks on a held-out split."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from kf_core.data.base import ArrayDataset
from kf_core.factor import FactorNet
from kf_core.tasks import TaskSpec, task_labels
from kf_core.teacher import Teacher

__all__ = ["factor_accuracy", "labelled_accuracy", "teacher_accuracy"]

Predict = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


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
