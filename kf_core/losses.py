"""The five terms of the InfoMax-Bottleneck (IMB) objective, as pure functions.

L = lambda_feat * L_infomax + lambda_kd * L_kd + L_cls + task_weight * L_task + beta * L_infomin, summed over
tasks. Each function documents its formula; none of them holds state or knows about the training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "batch_moment_kl",
    "gaussian_kl",
    "infomax_loss",
    "infonce_loss",
    "kd_loss",
    "label_smoothing_ce",
    "logit_mse_loss",
]


def infomax_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan-style lower bound on I(a; b) over a batch, as in the paper's code (loss = -bound).

    With rows L2-normalised and ``S = a b^T`` (B x B): ``E_j = sum(diag S) / B^2`` and
    ``E_m = mean over all B^2 entries of exp(S * (1 - I))`` (diagonal entries count as exp(0) = 1);
    ``loss = -(E_j - log E_m)``. The positives are matching rows (same image), the negatives the other rows.
    The B^2 normalisations are the reference code's quirks, kept so that its loss weights carry over.
    """
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    s = a @ b.t()
    eye = torch.eye(s.shape[0], device=s.device, dtype=s.dtype)
    e_joint = (s * eye).mean()
    e_marginal = torch.exp(s * (1 - eye)).mean()
    return -(e_joint - torch.log(e_marginal))


def infonce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE: cross-entropy of picking row i of ``b`` for row i of ``a`` among all rows, cosine / temperature.

    ``log B - loss`` is a lower bound on I(a; b). The principled alternative to :func:`infomax_loss`.
    """
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, target)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-target distillation: ``T^2 * KL(softmax(t / T) || softmax(s / T))``, averaged over the batch."""
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def logit_mse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Logit matching: mean over batch and classes of ``(s - t)^2`` (the paper's dSprites setting).

    Unlike :func:`kd_loss` it pins the logits' absolute level, which class-subset tasks need: their logits are
    concatenated at assembly time and compared across tasks under one softmax.
    """
    return F.mse_loss(student, teacher)


def label_smoothing_ce(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy against ``(1 - eps) * onehot(y) + eps / K``; targets of -1 are ignored.

    Averaged over the kept targets; 0 (with a gradient path) when every target in the batch is ignored.
    """
    total = F.cross_entropy(logits, target, ignore_index=-1, label_smoothing=smoothing, reduction="sum")
    return total / (target >= 0).sum().clamp(min=1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample, averaged over the batch.

    ``-0.5 * sum_d (1 + logvar - mu^2 - exp(logvar))``: the variational upper bound on I(X; Z_i).
    """
    per_sample = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return per_sample.mean()


def batch_moment_kl(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Moment-matching bottleneck for deterministic TSNs (the paper's classification path).

    Uses the batch mean ``m`` and variance ``v`` of each feature dimension:
    ``-0.5 * mean_d (1 + log v - m^2 - v)``, which pushes the marginal of z towards N(0, I).
    """
    m = z.mean(dim=0)
    v = z.var(dim=0, unbiased=False) + eps
    return -0.5 * torch.mean(1 + torch.log(v) - m.pow(2) - v)
