"""Supervised disentanglement metrics of a latent code against ground-truth factors: MIG and DCI.

**MIG** (Chen, Li, Grosse, Duvenaud, "Isolating Sources of Disentanglement in VAEs", NeurIPS 2018):
``MIG = 1/K sum_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k)``, where z_(1), z_(2) are the latent dimensions with
the largest and second-largest mutual information with factor v_k. Estimator as in disentanglement_lib
(Locatello et al. 2019): each latent dimension is discretised into ``bins`` equal-width bins over its range,
and the discrete mutual information and the factor entropy are plug-in estimates (natural log) on the samples.

**DCI** (Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled Representations",
ICLR 2018), from an importance matrix R (latents x factors):
disentanglement ``D = sum_i rho_i (1 - H_K(P_i.))`` with ``P_ij = R_ij / sum_k R_ik`` and weights
``rho_i = sum_k R_ik / sum_ik R_ik``; completeness ``C = 1/K sum_j (1 - H_D(P~_.j))`` with
``P~_ij = R_ij / sum_i R_ij`` (``H_n`` = entropy in log base n); informativeness = how well the code predicts
the factors.

Importances come from Eastwood & Williams' own **lasso**, carried over to categorical factors: per factor, an
L1 linear regression (scikit-learn ``Lasso``, coordinate descent on a precomputed Gram matrix) from the
standardised latents to the factor's standardised one-hot class indicators, ``R_ik = sum_c |W_ck|``. With
standardised inputs and targets, ``alpha`` acts as a correlation threshold: a latent enters a class's model
only if it correlates with the residual by more than alpha. The default, ``3 / sqrt(N)``, is three standard
errors of the correlation of independent variables (0.042 at 5,000 samples), so latents that carry nothing
about a factor stay out; when no latent passes at all, D and C are undefined and reported as null.
Coordinate descent stays exact when latents are nearly collinear, as a TSN's often are.

Informativeness is the test accuracy of the linear probe of :mod:`kf_core.evaluation.probe` (multinomial logistic
regression on all latents), not the lasso's: a least-squares fit to class indicators cannot single out the
middle classes of an ordered factor from one latent, and scored a perfectly informative code at about 0.4.

Rejected estimators: gradient-boosted trees (disentanglement_lib's choice) for speed, since sklearn's boosting
builds one tree per class per round and dSprites has 113 classes over 320 latents (minutes on 2 cores); and an
L1-penalised logistic regression fitted by L-BFGS, which had not converged on nearly collinear latents.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from kf_core.errors import DataError
from kf_core.evaluation.probe import probe_accuracy

__all__ = [
    "dci",
    "dci_from_importance",
    "discretise",
    "lasso_importance",
    "mig",
    "mig_from_mutual_information",
    "mutual_information",
]


def discretise(latents: np.ndarray, bins: int = 20) -> np.ndarray:
    """Per latent dimension, the index of its equal-width histogram bin (0..bins-1) over the observed range."""
    out = np.empty(latents.shape, dtype=np.int64)
    for j in range(latents.shape[1]):
        z = latents[:, j].astype(np.float64)
        edges = np.histogram_bin_edges(z, bins=bins)
        out[:, j] = np.clip(np.digitize(z, edges[1:-1]), 0, bins - 1)
    return out


def _entropy(x: np.ndarray) -> float:
    p = np.bincount(x) / len(x)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) between two non-negative integer arrays of equal length."""
    joint = a.astype(np.int64) * (int(b.max(initial=0)) + 1) + b
    return max(0.0, _entropy(a) + _entropy(b) - _entropy(joint))


def mig_from_mutual_information(mi: np.ndarray, entropy: np.ndarray) -> dict[str, Any]:
    """MIG from ``mi`` (latents x factors, nats) and the factors' entropies; per factor and averaged."""
    if mi.shape[0] < 2:
        raise DataError("MIG needs at least two latent dimensions")
    top = np.sort(mi, axis=0)[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(entropy > 0, (top[0] - top[1]) / entropy, np.nan)
    return {"mig": float(np.nanmean(gap)), "per_factor": [float(g) for g in gap]}


def mig(latents: np.ndarray, factors: np.ndarray, *, bins: int = 20) -> dict[str, Any]:
    """MIG of ``latents`` (N, D) against integer ``factors`` (N, K); also the argmax latent per factor."""
    _check(latents, factors)
    z = discretise(latents, bins)
    mi = np.array(
        [[mutual_information(z[:, j], factors[:, k]) for k in range(factors.shape[1])] for j in range(z.shape[1])]
    )
    entropy = np.array([_entropy(factors[:, k]) for k in range(factors.shape[1])])
    out = mig_from_mutual_information(mi, entropy)
    out["top_latent"] = [int(j) for j in mi.argmax(axis=0)]
    out["estimator"] = f"histogram, {bins} equal-width bins per latent; plug-in MI normalised by H(v_k)"
    return out


def _normalised_entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(p), 0.0)
    return np.asarray(-(p * logs).sum(axis=axis) / np.log(base))


def dci_from_importance(importance: np.ndarray) -> dict[str, Any]:
    """Disentanglement and completeness from a non-negative importance matrix R (latents x factors)."""
    r = np.abs(np.asarray(importance, dtype=np.float64))
    n_latents, n_factors = r.shape
    total = r.sum()
    out: dict[str, Any] = {"disentanglement": float("nan"), "completeness": float("nan"), "per_factor_completeness": []}
    if total <= 0:
        return out
    code = r.sum(axis=1)
    used = code > 0
    if n_factors > 1:
        p = r[used] / code[used, None]
        d_i = 1.0 - _normalised_entropy(p, n_factors, axis=1)
        out["disentanglement"] = float((code[used] / total * d_i).sum())
    if n_latents > 1:
        col = r.sum(axis=0)
        p = np.divide(r, col, out=np.zeros_like(r), where=col > 0)
        c_j = np.where(col > 0, 1.0 - _normalised_entropy(p, n_latents, axis=0), np.nan)
        out["completeness"] = float(np.nanmean(c_j))
        out["per_factor_completeness"] = [float(c) for c in c_j]
    return out


def lasso_importance(latents: np.ndarray, factors: np.ndarray, *, alpha: float | None = None) -> np.ndarray:
    """(latents, factors) importance matrix from per-factor lasso fits (see the module docstring)."""
    # Imported here: sklearn.linear_model takes about a second to import and only this metric needs it.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    _check(latents, factors)
    z = latents.astype(np.float64)
    std = z.std(axis=0)
    std[std < 1e-8] = 1.0
    z = (z - z.mean(axis=0)) / std
    alpha = 3.0 / np.sqrt(len(z)) if alpha is None else alpha
    importance = np.zeros((z.shape[1], factors.shape[1]))
    for k in range(factors.shape[1]):
        onehot = (factors[:, k, None] == np.unique(factors[:, k])[None, :]).astype(np.float64)
        target = (onehot - onehot.mean(axis=0)) / onehot.std(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a loose fit still ranks the latents
            model = Lasso(alpha=alpha, precompute=True, max_iter=2000, tol=1e-4).fit(z, target)
        importance[:, k] = np.abs(np.atleast_2d(model.coef_)).sum(axis=0)
    return importance


def dci(
    train_latents: np.ndarray,
    train_factors: np.ndarray,
    test_latents: np.ndarray,
    test_factors: np.ndarray,
    *,
    alpha: float | None = None,
    max_iter: int = 100,
) -> dict[str, Any]:
    """DCI: lasso importances fitted on the training split, informativeness = probe accuracy on the test split."""
    _check(test_latents, test_factors)
    alpha_used = 3.0 / np.sqrt(len(train_latents)) if alpha is None else alpha
    importance = lasso_importance(train_latents, train_factors, alpha=alpha_used)
    out = dci_from_importance(importance)
    names = [f"factor_{k}" for k in range(train_factors.shape[1])]
    scores = probe_accuracy(
        train_latents,
        {n: train_factors[:, k] for k, n in enumerate(names)},
        test_latents,
        {n: test_factors[:, k] for k, n in enumerate(names)},
        max_iter=max_iter,
    )
    accuracy = [scores[n]["accuracy"] for n in names]
    out["informativeness"] = float(np.mean(accuracy))
    out["per_factor_informativeness"] = accuracy
    out["importance"] = importance.tolist()
    out["estimator"] = (
        f"lasso importances (alpha={alpha_used:.3g}, standardised latents -> one-hot classes); "
        "informativeness = linear-probe test accuracy"
    )
    return out


def _check(latents: np.ndarray, factors: np.ndarray) -> None:
    if latents.ndim != 2 or factors.ndim != 2 or len(latents) != len(factors):
        raise DataError(f"latents (N, D) and factors (N, K) must match in N; got {latents.shape}, {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer) or (factors < 0).any():
        raise DataError("factors must be non-negative integer classes")
