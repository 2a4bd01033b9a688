"""What ``kf demo`` shows: the samples it predicts are varied, not the first rows of a sorted split."""

from __future__ import annotations

import numpy as np

from kf_core import varied_samples
from kf_core.data.dsprites import FACTORS, latent_classes


def _sorted_grid_labels() -> dict[str, np.ndarray]:
    """Labels of every 97th dSprites image in grid order: like a split, sorted, its first rows are all the same
    square at scale 0.5 and orientation 0."""
    classes = latent_classes(np.arange(0, 737_280, 97))
    return {f: classes[:, j] for j, f in enumerate(FACTORS)}


def test_picks_differ_in_every_label_column() -> None:
    labels = _sorted_grid_labels()
    picks = varied_samples(labels, 4)
    assert len(picks) == 4 and len(set(picks.tolist())) == 4
    for name, column in labels.items():
        distinct = len(set(column[picks].tolist()))
        assert distinct == min(4, len(set(column.tolist()))), (name, column[picks])


def test_picks_are_deterministic_and_in_range() -> None:
    labels = _sorted_grid_labels()
    first = varied_samples(labels, 6)
    assert np.array_equal(first, varied_samples(labels, 6))
    assert first.min() >= 0 and first.max() < len(labels["shape"])
    assert not np.array_equal(first, varied_samples(labels, 6, seed=1))


def test_asking_for_more_than_there_is_returns_them_all_once() -> None:
    labels = {"y": np.array([0, 1, 1])}
    assert sorted(varied_samples(labels, 10).tolist()) == [0, 1, 2]
    assert varied_samples(labels, 0).tolist() == []
    assert varied_samples({}, 3).tolist() == []
