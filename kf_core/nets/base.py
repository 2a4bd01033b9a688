"""The contract every registered network follows.

A backbone maps images ``(B, C, H, W)`` to one pooled feature vector ``(B, feature_dim)`` and also exposes
pooled features of its intermediate stages (``stage_dims``), which the InfoMax term matches against the
teacher's stage features. Gaussian encoders (used as task-specific networks on disentanglement data) return
``(mu, logvar)`` from :meth:`GaussianEncoder.forward_gaussian` and ``mu`` from ``forward``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Backbone", "GaussianEncoder"]


class Backbone(nn.Module):
    """Base class: subclasses set the three attributes and implement :meth:`forward_stages`."""

    in_channels: int
    feature_dim: int
    stage_dims: tuple[int, ...]

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(feature, stages)``: the ``(B, feature_dim)`` output and pooled ``(B, stage_dims[l])``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


class GaussianEncoder(Backbone):
    """A backbone whose output is a diagonal Gaussian q(z|x); ``forward`` returns its mean."""

    def forward_gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``(B, feature_dim)``."""
        raise NotImplementedError

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        mu, _ = self.forward_gaussian(x)
        return mu, [mu]
