"""Wide ResNet (WRN-depth-k): the paper's CIFAR-10 teacher (WRN-28-2) and an alternative CKN.

Reference: Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016. Like the WRN-28-2 the Factorizing
Knowledge paper uses (the MixMatch/FixMatch variant: Berthelot et al. 2019, Sohn et al. 2020), blocks are
pre-activation with BatchNorm and LeakyReLU(0.1), and the first block of the first group feeds its
activated input to the shortcut too. Three groups of ``(depth - 4) / 6`` blocks at 16k, 32k and 64k channels.
"""

from __future__ import annotations

import torch
from torch import nn

from kf_core.errors import ConfigError
from kf_core.nets.base import Backbone
from kf_core.registry import register_net

__all__ = ["WideBasicBlock", "WideResNet", "wrn28", "wrn28_2", "wrn28_10"]

_SLOPE = 0.1  # LeakyReLU negative slope of the MixMatch/FixMatch WRN


class WideBasicBlock(nn.Module):
    """Pre-activation block: ``BN -> act -> conv3x3 -> BN -> act -> conv3x3`` plus a shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, *, activate_shortcut: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.act = nn.LeakyReLU(_SLOPE)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.activate_shortcut = activate_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act(self.bn1(x))
        out: torch.Tensor = self.conv2(self.act(self.bn2(self.conv1(a))))
        if self.shortcut is None:
            return x + out
        # Right after the stem the raw input is un-normalised, so the reference shortcut reads it activated.
        skip: torch.Tensor = self.shortcut(a if self.activate_shortcut else x)
        return skip + out


class WideResNet(Backbone):
    """Stem conv, three groups of wide blocks, final BN-act; the feature is that output pooled."""

    def __init__(self, *, in_channels: int, depth: int, k: int, width: float, feature_dim: int | None) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ConfigError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if k < 1 or width <= 0:
            raise ConfigError(f"WRN needs k >= 1 and width > 0, got k={k}, width={width}")
        n = (depth - 4) // 6
        stem = max(4, round(16 * width))
        channels = [max(4, round(c * k * width)) for c in (16, 32, 64)]
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        groups: list[nn.Module] = []
        prev = stem
        for i, c in enumerate(channels):
            first = WideBasicBlock(prev, c, stride=1 if i == 0 else 2, activate_shortcut=i == 0)
            groups.append(nn.Sequential(first, *(WideBasicBlock(c, c, stride=1) for _ in range(n - 1))))
            prev = c
        self.groups = nn.ModuleList(groups)
        # Pre-activation blocks leave their sum un-normalised; the reference closes with one BN-act.
        self.final = nn.Sequential(nn.BatchNorm2d(prev), nn.LeakyReLU(_SLOPE))
        self.stage_dims = tuple(channels)
        self.proj: nn.Module = nn.Identity() if feature_dim in (None, prev) else nn.Linear(prev, feature_dim)
        self.feature_dim = int(feature_dim or prev)
        _init_weights(self)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(x)
        maps = []
        for group in self.groups:
            h = group(h)
            maps.append(h)
        # The last stage is read after the final BN-act, so it is exactly the (unprojected) feature.
        maps[-1] = self.final(h)
        # mean rather than AdaptiveAvgPool2d: exports to ONNX as a plain ReduceMean.
        stages = [m.mean(dim=(2, 3)) for m in maps]
        return self.proj(stages[-1]), stages


def _init_weights(model: nn.Module) -> None:
    # He (fan-out) init for the leaky ReLU, as the FixMatch WRN does.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu", a=_SLOPE)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_net
def wrn28(
    *,
    in_channels: int = 3,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
    k: int = 2,
    depth: int = 28,
) -> WideResNet:
    """WRN-``depth``-``k`` (default WRN-28-2); ``width`` scales every layer on top of ``k``."""
    del input_size  # the pooled output fits any input size
    return WideResNet(in_channels=in_channels, depth=depth, k=k, width=width, feature_dim=feature_dim)


@register_net
def wrn28_2(
    *,
    in_channels: int = 3,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
) -> WideResNet:
    """WRN-28-2, the paper's CIFAR-10 teacher; natural feature width 128 * width."""
    return wrn28(in_channels=in_channels, input_size=input_size, feature_dim=feature_dim, width=width, k=2)


@register_net
def wrn28_10(
    *,
    in_channels: int = 3,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
) -> WideResNet:
    """WRN-28-10, the classic wide CIFAR network; natural feature width 640 * width."""
    return wrn28(in_channels=in_channels, input_size=input_size, feature_dim=feature_dim, width=width, k=10)
