"""MobileNetV2: the paper's task-specific network (at width 0.5) and a light common-knowledge network.

Reference: Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018; layer settings and channel rounding follow torchvision's ``mobilenet_v2``. The CIFAR stem (default)
makes the stem and the first stride-2 bottleneck stage stride 1, so a 32x32 input ends at 4x4 rather than 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from kf_core.errors import ConfigError
from kf_core.nets.base import Backbone
from kf_core.registry import register_net

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

# (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM, _LAST = 32, 1280
_N_STAGES = 3  # the last three feature blocks (160-, 320- and 1280-channel) are the stage features


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor``, never more than 10 % below ``v`` (as the reference)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu(in_planes: int, out_planes: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when shape is unchanged."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_planes * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu(in_planes, hidden, 1, 1))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            # No activation after the projection: the paper's "linear bottleneck".
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_planes == out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(Backbone):
    """Stem, inverted-residual stages, 1x1 conv to the last width; the feature is that conv pooled."""

    def __init__(self, *, in_channels: int, width: float, cifar_stem: bool, feature_dim: int | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        stem = _make_divisible(_STEM * width)
        # The reference widens the last conv only for width > 1: narrow nets keep a 1280-wide feature.
        last = _make_divisible(_LAST * max(1.0, width))
        blocks: list[nn.Module] = [_conv_bn_relu(in_channels, stem, 3, 1 if cifar_stem else 2)]
        prev, seen_stride2 = stem, False
        for t, c, n, s in _SETTINGS:
            out = _make_divisible(c * width)
            stride = s
            if s == 2 and not seen_stride2:
                # 32x32 inputs would reach 1x1 with both early downsamplings; CIFAR variants drop them.
                seen_stride2 = True
                stride = 1 if cifar_stem else 2
            stage = [InvertedResidual(prev if i == 0 else out, out, stride if i == 0 else 1, t) for i in range(n)]
            blocks.append(nn.Sequential(*stage))
            prev = out
        blocks.append(_conv_bn_relu(prev, last, 1, 1))
        dims = [_make_divisible(c * width) for _, c, _, _ in _SETTINGS] + [last]
        n_early = len(blocks) - _N_STAGES
        self.early = nn.Sequential(*blocks[:n_early])
        self.late = nn.ModuleList(blocks[n_early:])
        self.stage_dims = tuple(dims[-_N_STAGES:])
        self.proj: nn.Module = nn.Identity() if feature_dim in (None, last) else nn.Linear(last, feature_dim)
        self.feature_dim = int(feature_dim or last)
        _init_weights(self)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.early(x)
        stages = []
        for block in self.late:
            h = block(h)
            # mean rather than AdaptiveAvgPool2d: exports to ONNX as a plain ReduceMean.
            stages.append(h.mean(dim=(2, 3)))
        return self.proj(stages[-1]), stages


def _init_weights(model: nn.Module) -> None:
    # He (fan-out) init, as torchvision's MobileNetV2, so results are comparable with the reference.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_net
def mobilenetv2(
    *,
    in_channels: int = 3,
    input_size: tuple[int, int] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
    cifar_stem: bool = True,
) -> MobileNetV2:
    """MobileNetV2 with width multiplier ``width``; ``cifar_stem=False`` gives the ImageNet strides."""
    del input_size  # the pooled output fits any input size
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    return MobileNetV2(in_channels=in_channels, width=width, cifar_stem=cifar_stem, feature_dim=feature_dim)
