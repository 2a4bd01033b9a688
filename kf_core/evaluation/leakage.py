"""The leakage matrix: how much each task-specific feature z_i tells about every task j.

Entry (i, j) is the normalised accuracy above chance of a linear probe from z_i to task j's labels, fitted on
training features and scored on test features (:func:`kf_core.evaluation.probe.probe_accuracy`). The diagonal is the
task information each feature keeps; the off-diagonal is leakage, summarised by its mean. A model with one
shared representation (the multi-task baseline) passes the same array for every task: it is probed once and
every row of its matrix is the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kf_core.errors import DataError
from kf_core.evaluation.probe import probe_accuracy

__all__ = ["leakage_matrix"]


def leakage_matrix(
    train_features: Mapping[str, np.ndarray],
    train_labels: Mapping[str, np.ndarray],
    test_features: Mapping[str, np.ndarray],
    test_labels: Mapping[str, np.ndarray],
    *,
    l2: float = 1e-4,
    max_iter: int = 100,
) -> dict[str, Any]:
    """Probe every feature ``z_i`` (keyed by task i) for every task ``j`` of ``train_labels``.

    Returns plain JSON: ``tasks`` (row i = feature of task i, column j = probed task), ``matrix`` (normalised
    accuracy above chance), ``accuracy`` (raw test accuracy), ``chance`` (per column), ``mean_diagonal`` and
    ``mean_off_diagonal``.
    """
    tasks = list(train_labels)
    missing = [t for t in tasks if t not in train_features or t not in test_features]
    if missing:
        raise DataError(f"leakage: no features for task(s) {missing}; give one feature array per task")
    # Keyed by array identity: a representation shared by several tasks is probed once.
    probed: dict[int, dict[str, dict[str, float]]] = {}
    for t in tasks:
        key = id(train_features[t])
        if key not in probed:
            probed[key] = probe_accuracy(
                train_features[t], train_labels, test_features[t], test_labels, l2=l2, max_iter=max_iter
            )
    rows = [probed[id(train_features[i])] for i in tasks]
    matrix = [[row[j]["normalised"] for j in tasks] for row in rows]
    m = np.array(matrix, dtype=np.float64)
    off = ~np.eye(len(tasks), dtype=bool)
    return {
        "tasks": tasks,
        "matrix": matrix,
        "accuracy": [[row[j]["accuracy"] for j in tasks] for row in rows],
        "chance": [rows[0][j]["chance"] for j in tasks],
        "mean_diagonal": float(np.nanmean(np.diag(m))),
        "mean_off_diagonal": float(np.nanmean(m[off])) if off.any() else float("nan"),
        "shared_representation": len(probed) == 1 and len(tasks) > 1,
    }
