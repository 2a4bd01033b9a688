"""Linear probes and the leakage matrix on features whose content is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from kf_core.evaluation.leakage import leakage_matrix
from kf_core.evaluation.probe import chance_accuracy, fit_probe, normalise, probe_accuracy

N = 1200


def _labels(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.integers(0, 4, N), "b": rng.integers(0, 3, N)}


def _encode(y: np.ndarray, rng: np.random.Generator, dim: int = 6) -> np.ndarray:
    """A noisy one-hot code of ``y`` (classes < dim) in ``dim`` features."""
    z = rng.normal(0, 0.3, (len(y), dim))
    z[np.arange(len(y)), y] += 2.0
    return z


def test_chance_is_the_majority_rate_and_normalise_clips() -> None:
    train = np.array([0] * 80 + [1] * 20)
    test = np.array([0] * 70 + [1] * 30)
    assert chance_accuracy(train, test) == pytest.approx(0.7)
    assert normalise(0.85, 0.7) == pytest.approx(0.5)
    assert normalise(0.5, 0.7) == 0.0
    assert np.isnan(normalise(1.0, 1.0))


def test_probe_reads_what_the_feature_holds_and_not_what_it_does_not() -> None:
    y = _labels()
    rng = np.random.default_rng(1)
    z = _encode(y["a"], rng)
    h = N // 2
    out = probe_accuracy(z[:h], {k: v[:h] for k, v in y.items()}, z[h:], {k: v[h:] for k, v in y.items()})
    assert out["a"]["accuracy"] > 0.95 and out["a"]["normalised"] > 0.9
    assert out["b"]["normalised"] < 0.1
    assert out["b"]["chance"] == pytest.approx(1 / 3, abs=0.05)


def test_probe_skips_labels_outside_a_class_subset() -> None:
    y = _labels()["a"]
    z = _encode(y, np.random.default_rng(2))
    subset = np.where(y < 2, y, -1)  # classes 0 and 1 only
    out = probe_accuracy(z[:600], {"s": subset[:600]}, z[600:], {"s": subset[600:]})
    assert out["s"]["accuracy"] > 0.95
    assert out["s"]["chance"] == pytest.approx(0.5, abs=0.08)


def test_probe_converges_on_nearly_collinear_features() -> None:
    """Learned features span fewer directions than they have dimensions; the probe must still read them."""
    y = _labels()["a"]
    rng = np.random.default_rng(3)
    code = _encode(y, rng, dim=4)
    mix = rng.normal(size=(4, 40))
    z = code @ mix + rng.normal(0, 1e-4, (N, 40))  # 40 dimensions, rank 4 up to noise
    h = N // 2
    out = probe_accuracy(z[:h], {"a": y[:h]}, z[h:], {"a": y[h:]}, max_iter=50)
    assert out["a"]["accuracy"] > 0.95, out


def test_probe_predicts_with_the_training_whitening() -> None:
    y = _labels()["a"]
    z = _encode(y, np.random.default_rng(6)) * 1000.0 + 50.0  # scale and offset must not matter
    probe = fit_probe(z, {"a": y})
    assert (probe.predict(z)["a"] == y).mean() > 0.95


def test_leakage_matrix_diagonal_and_off_diagonal() -> None:
    y = _labels()
    rng = np.random.default_rng(4)
    only_a = _encode(y["a"], rng)
    both = np.concatenate([_encode(y["a"], rng), _encode(y["b"], rng)], axis=1)
    h = N // 2
    tr = {k: v[:h] for k, v in y.items()}
    te = {k: v[h:] for k, v in y.items()}
    out = leakage_matrix({"a": only_a[:h], "b": both[:h]}, tr, {"a": only_a[h:], "b": both[h:]}, te)
    (aa, ab), (ba, bb) = out["matrix"]
    assert aa > 0.9 and bb > 0.9  # each feature keeps its task
    assert ab < 0.1  # z_a tells nothing about b
    assert ba > 0.9  # z_b leaks all of a
    assert out["mean_off_diagonal"] == pytest.approx((ab + ba) / 2)
    assert out["mean_diagonal"] == pytest.approx((aa + bb) / 2)
    assert out["shared_representation"] is False


def test_leakage_of_a_shared_representation_has_identical_rows() -> None:
    y = _labels()
    rng = np.random.default_rng(5)
    shared = np.concatenate([_encode(y["a"], rng), _encode(y["b"], rng)], axis=1)
    h = N // 2
    tr = {k: v[:h] for k, v in y.items()}
    te = {k: v[h:] for k, v in y.items()}
    out = leakage_matrix(dict.fromkeys(y, shared[:h]), tr, dict.fromkeys(y, shared[h:]), te)
    assert out["matrix"][0] == out["matrix"][1]
    assert out["shared_representation"] is True
    assert out["mean_off_diagonal"] > 0.9
