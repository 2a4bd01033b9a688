"""The IMB loss terms against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kf_core import losses


def test_infomax_identity_pairs_gives_minus_half() -> None:
    # S = I: E_j = trace / B^2 = 2 / 4; every off-diagonal exp(0) = 1 and the diagonal counts exp(0) too.
    eye = torch.eye(2)
    assert losses.infomax_loss(eye, eye).item() == pytest.approx(-0.5)


def test_infomax_swapped_pairs() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # S = [[0, 1], [1, 0]]: E_j = 0, E_m = (1 + e + e + 1) / 4.
    assert losses.infomax_loss(a, b).item() == pytest.approx(math.log((2 + 2 * math.e) / 4), rel=1e-6)


def test_infomax_is_scale_invariant_and_prefers_matching_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=g)
    assert losses.infomax_loss(a, 3 * a).item() == pytest.approx(losses.infomax_loss(a, a).item(), rel=1e-5)
    assert losses.infomax_loss(a, a) < losses.infomax_loss(a, torch.randn(16, 8, generator=g))


def test_infonce_matches_hand_value() -> None:
    a = torch.eye(2)
    # cosine logits / 0.5 = [[2, 0], [0, 2]]: loss = -log(e^2 / (e^2 + 1)).
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert losses.infonce_loss(a, a, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_hand_values() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    # T = 1: p_t = (.75, .25), p_s = (.5, .5).
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.kd_loss(s, t, 1.0).item() == pytest.approx(kl, rel=1e-6)
    # T = 2: p_t = softmax(log(3) / 2, 0) = (sqrt3, 1) / (1 + sqrt3), scaled by T^2 = 4.
    p = math.sqrt(3) / (1 + math.sqrt(3))
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert losses.kd_loss(s, t, 2.0).item() == pytest.approx(4 * kl2, rel=1e-6)
    assert losses.kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_mse() -> None:
    assert losses.logit_mse_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(5.0)


def test_label_smoothing_ce_hand_value_and_ignored_targets() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [5.0, -5.0]])
    # y = 0, eps = 0.1 over K = 2: q = (.95, .05), log p = (log .75, log .25).
    expected = -(0.95 * math.log(0.75) + 0.05 * math.log(0.25))
    got = losses.label_smoothing_ce(logits, torch.tensor([0, -1]), smoothing=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    none = losses.label_smoothing_ce(logits.requires_grad_(), torch.tensor([-1, -1]))
    assert none.item() == 0.0
    none.backward()  # still differentiable when the whole batch is ignored


def test_gaussian_kl_hand_values() -> None:
    zero = torch.zeros(3, 4)
    assert losses.gaussian_kl(zero, zero).item() == pytest.approx(0.0)
    mu = torch.tensor([[1.0, 2.0]])
    assert losses.gaussian_kl(mu, torch.zeros(1, 2)).item() == pytest.approx(2.5)
    logvar = torch.full((1, 3), math.log(2.0))
    assert losses.gaussian_kl(torch.zeros(1, 3), logvar).item() == pytest.approx(3 * 0.5 * (1 - math.log(2)))


def test_batch_moment_kl() -> None:
    z = torch.tensor([[1.0, 3.0], [-1.0, 5.0]])  # means (0, 4), variances (1, 1)
    # dim 0 contributes 0, dim 1 contributes -0.5 * (1 + 0 - 16 - 1) = 8; mean over dims = 4.
    assert losses.batch_moment_kl(z, eps=0.0).item() == pytest.approx(4.0)
