"""ResNet-18 with the CIFAR stem: the paper's common-knowledge network on CIFAR-10 and ImageNet.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016. For 32x32 inputs
the 7x7 stride-2 stem and its max-pool are replaced by one 3x3 stride-1 convolution (the usual CIFAR variant,
as in the Factorizing Knowledge paper's CIFAR-10 experiments), so the four stages see 32, 16, 8 and 4 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from kf_core.errors import ConfigError
from kf_core.nets.base import Backbone
from kf_core.registry import register_net

__all__ = ["BasicBlock", "ResNet", "resnet18"]

_CHANNELS = (64, 128, 256, 512)
_N_STAGES = 3  # layers 2, 3 and 4 are the stage features


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out of place: ``x`` may be the caller's tensor, which must stay untouched.
        y: torch.Tensor = self.relu(out + self.shortcut(x))
        return y


class ResNet(Backbone):
    """CIFAR-stem ResNet of BasicBlocks; the feature is the pooled last stage, projected if asked."""

    def __init__(
        self,
        *,
        in_channels: int,
        blocks: tuple[int, ...],
        channels: tuple[int, ...],
        feature_dim: int | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        prev = channels[0]
        for i, (n, c) in enumerate(zip(blocks, channels, strict=True)):
            first = BasicBlock(prev, c, stride=1 if i == 0 else 2)
            layers.append(nn.Sequential(first, *(BasicBlock(c, c, stride=1) for _ in range(n - 1))))
            prev = c
        n_early = len(layers) - _N_STAGES
        self.early = nn.Sequential(*layers[:n_early])
        self.late = nn.ModuleList(layers[n_early:])
        self.stage_dims = tuple(channels[n_early:])
        self.proj: nn.Module = nn.Identity() if feature_dim in (None, prev) else nn.Linear(prev, feature_dim)
        self.feature_dim = int(feature_dim or prev)
        _init_weights(self)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.early(self.stem(x))
        stages = []
        for layer in self.late:
            h = layer(h)
            # mean rather than AdaptiveAvgPool2d: exports to ONNX as a plain ReduceMean.
            stages.append(h.mean(dim=(2, 3)))
        return self.proj(stages[-1]), stages


def _init_weights(model: nn.Module) -> None:
    # He init, as torchvision's ResNet: keeps activation scale steady through deep ReLU stacks.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_net
def resnet18(
    *,
    in_channels: int = 3,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
) -> ResNet:
    """ResNet-18, CIFAR stem, channels ``64-128-256-512`` times ``width``; natural feature 512 * width."""
    del input_size  # the pooled output fits any input size
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    channels = tuple(max(4, round(c * width)) for c in _CHANNELS)
    return ResNet(in_channels=in_channels, blocks=(2, 2, 2, 2), channels=channels, feature_dim=feature_dim)
