"""SimpleConv64: the small convolutional encoder of the paper's dSprites setting, deterministic and Gaussian.

Reference: Yang, Ye, Wang, "Factorizing Knowledge in Neural Networks", ECCV 2022. On dSprites the teacher and
the common-knowledge network are SimpleConv64 (six 4x4 stride-2 convolutions, 32-32-64-128-256-256 channels,
then a Linear to the latent), and each task-specific network is the same trunk as a Gaussian encoder
(the disentanglement-literature encoder, as in Locatello et al., "Challenging Common Assumptions in the
Unsupervised Learning of Disentangled Representations", ICML 2019). These nets run in the CPU training loop,
so they stay plain by default: no BatchNorm, no branches. ``batchnorm=True`` adds BatchNorm after every
convolution, which converges in far fewer steps when the CPU budget is minutes (see the dsprites recipe).
"""

from __future__ import annotations

import torch
from torch import nn

from kf_core.errors import ConfigError
from kf_core.nets.base import Backbone, GaussianEncoder
from kf_core.registry import register_net

__all__ = ["GaussianSimpleConv64", "SimpleConv64", "gaussian_simpleconv64", "simpleconv64"]

_CHANNELS = (32, 32, 64, 128, 256, 256)
_N_STAGES = 3  # the last three convolutions are the stage features
_MIN_SIDE = 64  # six stride-2 convolutions shrink 64 to 1; anything smaller collapses to zero size
_LOGVAR_LIMIT = 10.0  # keeps exp(logvar) finite early in training, when the encoder is still random


class _SimpleConvTrunk(nn.Module):
    """The six ``Conv(4, stride 2, pad 1) -> ReLU`` layers shared by both encoders."""

    def __init__(self, *, in_channels: int, width: float, batchnorm: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"width must be positive, got {width}")
        channels = [max(4, round(c * width)) for c in _CHANNELS]
        convs: list[nn.Module] = []
        prev = in_channels
        for c in channels:
            layer: list[nn.Module] = [nn.Conv2d(prev, c, 4, stride=2, padding=1, bias=not batchnorm)]
            if batchnorm:
                layer.append(nn.BatchNorm2d(c))
            convs.append(nn.Sequential(*layer, nn.ReLU(inplace=True)))
            prev = c
        n_early = len(convs) - _N_STAGES
        self.early = nn.Sequential(*convs[:n_early])
        self.late = nn.ModuleList(convs[n_early:])
        self.stage_dims = tuple(channels[n_early:])
        self.out_dim = channels[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.early(x)
        stages = []
        for conv in self.late:
            h = conv(h)
            # A mean, not a flatten, so inputs larger than 64x64 still give out_dim features.
            stages.append(h.mean(dim=(2, 3)))
        return stages[-1], stages


class SimpleConv64(Backbone):
    """SimpleConv64 trunk, then ``Linear(256 * width -> feature_dim)``: the paper's latent layer."""

    def __init__(self, *, in_channels: int, feature_dim: int, width: float, batchnorm: bool = False) -> None:
        super().__init__()
        self.trunk = _SimpleConvTrunk(in_channels=in_channels, width=width, batchnorm=batchnorm)
        self.fc = nn.Linear(self.trunk.out_dim, feature_dim)
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.stage_dims = self.trunk.stage_dims

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, stages = self.trunk(x)
        return self.fc(h), stages


class GaussianSimpleConv64(GaussianEncoder):
    """SimpleConv64 trunk, then ``Linear(256 * width -> 2 * feature_dim)`` split into ``(mu, logvar)``."""

    def __init__(self, *, in_channels: int, feature_dim: int, width: float, batchnorm: bool = False) -> None:
        super().__init__()
        self.trunk = _SimpleConvTrunk(in_channels=in_channels, width=width, batchnorm=batchnorm)
        self.fc = nn.Linear(self.trunk.out_dim, 2 * feature_dim)
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.stage_dims = self.trunk.stage_dims

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        h, stages = self.trunk(x)
        mu, logvar = self.fc(h).chunk(2, dim=1)
        return mu, logvar.clamp(-_LOGVAR_LIMIT, _LOGVAR_LIMIT), stages

    def forward_gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, _ = self._encode(x)
        return mu, logvar

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # The trunk's stages rather than the base class's [mu], so either encoder can serve as a CKN.
        mu, _, stages = self._encode(x)
        return mu, stages


def _check_input_size(name: str, input_size: tuple[int, int] | None) -> None:
    if input_size is not None and min(input_size) < _MIN_SIDE:
        raise ConfigError(
            f"{name} needs inputs of at least {_MIN_SIDE}x{_MIN_SIDE}, got {input_size[0]}x{input_size[1]}; "
            "resize the images or pick a network for small inputs (e.g. resnet18, mobilenetv2)"
        )


@register_net
def simpleconv64(
    *,
    in_channels: int = 1,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
    batchnorm: bool = False,
) -> SimpleConv64:
    """SimpleConv64 for 64x64 (or larger) images; ``feature_dim`` defaults to the paper's latent size, 10."""
    _check_input_size("simpleconv64", input_size)
    return SimpleConv64(in_channels=in_channels, feature_dim=feature_dim or 10, width=width, batchnorm=batchnorm)


@register_net
def gaussian_simpleconv64(
    *,
    in_channels: int = 1,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
    batchnorm: bool = False,
) -> GaussianSimpleConv64:
    """Gaussian SimpleConv64 encoder giving ``(mu, logvar)``; ``feature_dim`` defaults to 10."""
    _check_input_size("gaussian_simpleconv64", input_size)
    return GaussianSimpleConv64(
        in_channels=in_channels, feature_dim=feature_dim or 10, width=width, batchnorm=batchnorm
    )
