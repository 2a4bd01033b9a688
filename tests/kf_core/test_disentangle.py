"""MIG and DCI against codes with known answers: perfectly disentangled, rotated, partly entangled."""

from __future__ import annotations

import numpy as np
import pytest

from kf_core.errors import DataError
from kf_core.evaluation.disentangle import (
    dci,
    dci_from_importance,
    discretise,
    mig,
    mig_from_mutual_information,
    mutual_information,
)

N = 3000
SIZES = (3, 6, 8, 5)


def _factors(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, k, N) for k in SIZES], axis=1)


def _codes(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(latents, factors): one latent per factor, mixed by the identity, a rotation, or mostly the identity."""
    rng = np.random.default_rng(seed + 1)
    f = _factors(seed)
    fs = (f - f.mean(0)) / f.std(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(len(SIZES), len(SIZES))))
    # Every latent an equal mix of every factor: the rotation that disentangles least.
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    mix = {
        "perfect": np.eye(len(SIZES)),
        "rotated": rotation,
        "hadamard": hadamard,
        "partial": 0.8 * np.eye(len(SIZES)) + 0.2 * rotation,
    }
    z = fs @ mix[kind] + rng.normal(0, 0.05, fs.shape)
    return z, f


def _dci(kind: str) -> dict[str, float]:
    z, f = _codes(kind)
    h = N // 2
    return dci(z[:h], f[:h], z[h:], f[h:])


def test_discretise_uses_every_bin_in_range() -> None:
    z = np.linspace(-3, 5, 1000)[:, None]
    bins = discretise(z, bins=20)
    assert bins.min() == 0 and bins.max() == 19
    assert len(np.unique(bins)) == 20


def test_mutual_information_of_a_variable_with_itself_is_its_entropy_and_independent_is_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 20_000)
    b = rng.integers(0, 4, 20_000)
    assert mutual_information(a, a) == pytest.approx(np.log(4), abs=0.01)
    assert mutual_information(a, b) < 0.01


def test_mig_from_known_mutual_information() -> None:
    mi = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 0.25]])  # latents x factors
    out = mig_from_mutual_information(mi, np.array([1.0, 2.0]))
    # factor 0: (1 - 0.5) / 1; factor 1: (1 - 0.25) / 2
    assert out["per_factor"] == pytest.approx([0.5, 0.375])
    assert out["mig"] == pytest.approx(0.4375)


def test_mig_perfect_code_scores_about_one() -> None:
    z, f = _codes("perfect")
    out = mig(z, f)
    assert out["mig"] > 0.9, out
    assert out["top_latent"] == list(range(len(SIZES)))


def test_mig_rotated_code_scores_low_and_partial_in_between() -> None:
    mixed = mig(*_codes("hadamard"))["mig"]
    rotated = mig(*_codes("rotated"))["mig"]
    partial = mig(*_codes("partial"))["mig"]
    perfect = mig(*_codes("perfect"))["mig"]
    assert mixed < 0.05
    assert rotated < 0.5
    assert rotated + 0.1 < partial < perfect - 0.1


def test_dci_from_known_importance_matrices() -> None:
    one_to_one = dci_from_importance(np.eye(3))
    assert one_to_one["disentanglement"] == pytest.approx(1.0)
    assert one_to_one["completeness"] == pytest.approx(1.0)
    uniform = dci_from_importance(np.ones((3, 3)))
    assert uniform["disentanglement"] == pytest.approx(0.0)
    assert uniform["completeness"] == pytest.approx(0.0)
    # One latent serves every factor: completely complete, not at all disentangled.
    single = dci_from_importance(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert single["disentanglement"] == pytest.approx(0.0)
    assert single["completeness"] == pytest.approx(1.0)


def test_dci_perfect_code_scores_about_one() -> None:
    out = _dci("perfect")
    assert out["disentanglement"] > 0.9 and out["completeness"] > 0.9, out
    assert out["informativeness"] > 0.95, out


def test_dci_rotated_code_scores_low_and_partial_in_between() -> None:
    mixed, rotated, partial, perfect = _dci("hadamard"), _dci("rotated"), _dci("partial"), _dci("perfect")
    for key in ("disentanglement", "completeness"):
        assert mixed[key] < 0.05, (key, mixed)
        assert rotated[key] < 0.5, (key, rotated)
        assert rotated[key] + 0.1 < partial[key] < perfect[key] - 0.1, (key, rotated, partial, perfect)
    # A rotation loses no information: only its arrangement over the latents changes.
    assert mixed["informativeness"] > 0.95 and rotated["informativeness"] > 0.95


def test_dci_random_code_is_uninformative() -> None:
    f = _factors()
    z = np.random.default_rng(5).normal(size=(N, 3))
    out = dci(z[: N // 2], f[: N // 2], z[N // 2 :], f[N // 2 :])
    assert out["informativeness"] < 0.35  # chance is 1/3, 1/6, 1/8 and 1/5


def test_metrics_refuse_mismatched_inputs() -> None:
    z, f = _codes("perfect")
    with pytest.raises(DataError):
        mig(z[:10], f)
    with pytest.raises(DataError):
        mig(z, f.astype(np.float64))
