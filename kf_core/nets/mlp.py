"""A multilayer perceptron backbone for vectors (tabular features, embeddings) and small images (digits)."""

from __future__ import annotations

import math

import torch
from torch import nn

from kf_core.errors import ConfigError
from kf_core.nets.base import Backbone
from kf_core.registry import register_net

__all__ = ["MLP", "mlp"]


class MLP(Backbone):
    """Flatten, then ``Linear -> ReLU`` per hidden layer; each hidden activation is a stage feature."""

    def __init__(self, *, in_features: int, in_channels: int, hidden: tuple[int, ...], feature_dim: int | None) -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("mlp needs at least one hidden layer")
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(nn.Sequential(nn.Linear(width, h), nn.ReLU(inplace=True)))
            width = h
        self.layers = nn.ModuleList(layers)
        self.stage_dims = tuple(hidden)
        self.proj: nn.Module = nn.Identity() if feature_dim in (None, width) else nn.Linear(width, feature_dim)
        self.feature_dim = int(feature_dim or width)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = x.flatten(1)
        stages = []
        for layer in self.layers:
            h = layer(h)
            stages.append(h)
        return self.proj(h), stages


@register_net
def mlp(
    *,
    in_channels: int = 1,
    input_size: tuple[int, int] | None = None,
    input_shape: tuple[int, ...] | None = None,
    feature_dim: int | None = None,
    width: float = 1.0,
    hidden: tuple[int, ...] = (256, 256, 128),
) -> MLP:
    """MLP over flattened inputs: ``in_channels x H x W`` images, or samples of any ``input_shape`` (``(D,)``
    vectors); ``width`` scales every hidden layer."""
    if input_shape is not None:
        in_features = math.prod(int(s) for s in input_shape)
        in_channels = int(input_shape[0]) if len(input_shape) > 1 else 1
    elif input_size is not None:
        in_features = in_channels * input_size[0] * input_size[1]
    else:
        raise ConfigError("mlp needs input_shape (or input_size=(H, W)) to know how many inputs it flattens")
    sizes = tuple(max(4, round(n * width)) for n in hidden)
    return MLP(in_features=in_features, in_channels=in_channels, hidden=sizes, feature_dim=feature_dim)
