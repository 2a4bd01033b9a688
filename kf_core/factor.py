"""Factor networks: one common-knowledge network (CKN) shared by all tasks, plus per task a task-specific
network (TSN_i), a head and an auxiliary head.

For task i: ``z_c = CKN(x)``, ``z_i = TSN_i(x)``, ``logits_i = head_i(z_c + z_i)``. The auxiliary head
``aux_i(z_i)`` exists only for training (z_i alone must predict task i). Gaussian TSNs sample
``z_i = mu + sigma * eps`` while training and use ``mu`` at inference.

The inference parts are exposed as two small modules that export to ONNX on their own:
:class:`CknPart` (``x -> z_c``) and :class:`TaskPart` (``(x, z_c) -> logits_i``), so any subset of tasks can be
assembled later without torch (see :mod:`kf_core.assemble`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kf_core.errors import ConfigError, UnknownTaskError
from kf_core.nets import create_net
from kf_core.nets.base import Backbone, GaussianEncoder
from kf_core.registry import accepts
from kf_core.tasks import TaskSpec

__all__ = ["CknPart", "FactorConfig", "FactorNet", "FactorOutput", "NetSpec", "TaskPart"]


@dataclass(frozen=True)
class NetSpec:
    """A registered architecture and its extra keyword arguments (JSON-serialisable)."""

    name: str  # registry name, see kf_core.nets.list_nets()
    kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"width": 0.25}

    def build(self, *, input_shape: Sequence[int], feature_dim: int | None) -> Backbone:
        """Build for inputs of per-sample ``input_shape``: images ``(C, H, W)`` go to every architecture as
        ``in_channels`` and ``input_size``; other ranks (vectors ``(D,)``, ...) only to architectures that take
        ``input_shape`` (``mlp``), as convolutions need images."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) == 3:
            c, h, w = shape
            return create_net(self.name, in_channels=c, input_size=(h, w), feature_dim=feature_dim, **self.kwargs)
        if not accepts(self.name, "input_shape"):
            raise ConfigError(
                f"architecture {self.name!r} takes images (C, H, W), but the inputs have shape {shape}; "
                "use an architecture for vectors such as 'mlp' (e.g. the 'tabular' recipe)"
            )
        return create_net(self.name, input_shape=shape, feature_dim=feature_dim, **self.kwargs)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | str) -> NetSpec:
        if isinstance(d, str):
            return cls(name=d)
        return cls(name=str(d["name"]), kwargs=dict(d.get("kwargs") or {}))


@dataclass(frozen=True)
class FactorConfig:
    """Architecture of a factor set."""

    ckn: NetSpec  # common-knowledge network
    tsn: NetSpec  # task-specific network, one instance per task
    feature_dim: int = 64  # d: width of z_c and of every z_i

    def to_json(self) -> dict[str, Any]:
        return {"ckn": self.ckn.to_json(), "tsn": self.tsn.to_json(), "feature_dim": self.feature_dim}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FactorConfig:
        return cls(
            ckn=NetSpec.from_json(d["ckn"]),
            tsn=NetSpec.from_json(d["tsn"]),
            feature_dim=int(d.get("feature_dim", 64)),
        )


@dataclass
class FactorOutput:
    """Everything one training forward pass produces, keyed by task name where per task."""

    z_c: torch.Tensor
    stages: list[torch.Tensor]  # pooled CKN stage features, for InfoMax
    z: dict[str, torch.Tensor]  # z_i actually used (sampled while training)
    mu: dict[str, torch.Tensor]
    logvar: dict[str, torch.Tensor | None]  # None for deterministic TSNs
    logits: dict[str, torch.Tensor]  # head_i(z_c + z_i)
    aux_logits: dict[str, torch.Tensor]  # aux_i(z_i)


class FactorNet(nn.Module):
    """CKN + {TSN_i, head_i, aux_i} for a list of tasks."""

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        tasks: Sequence[TaskSpec],
        num_classes: Mapping[str, int],
        config: FactorConfig,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ConfigError("a factor network needs at least one task")
        d = config.feature_dim
        self.input_shape = tuple(int(s) for s in input_shape)  # one sample: (D,), (C, H, W), ...
        self.config = config
        self.tasks = list(tasks)
        self.num_classes = {t.name: int(num_classes[t.name]) for t in self.tasks}
        self.ckn = config.ckn.build(input_shape=self.input_shape, feature_dim=d)
        if self.ckn.feature_dim != d:
            raise ConfigError(f"CKN {config.ckn.name!r} gives width {self.ckn.feature_dim}, expected {d}")
        self.tsn = nn.ModuleDict()
        self.head = nn.ModuleDict()
        self.aux_head = nn.ModuleDict()
        for t in self.tasks:
            tsn = config.tsn.build(input_shape=self.input_shape, feature_dim=d)
            if tsn.feature_dim != d:
                raise ConfigError(f"TSN {config.tsn.name!r} gives width {tsn.feature_dim}, expected {d}")
            key = _key(t.name)
            self.tsn[key] = tsn
            self.head[key] = nn.Linear(d, self.num_classes[t.name])
            self.aux_head[key] = nn.Linear(d, self.num_classes[t.name])

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownTaskError("task", name, self.task_names)

    def encode_task(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mu_i, logvar_i)`` of TSN_i; logvar is None for a deterministic TSN."""
        tsn = self.tsn[_key(name)]
        if isinstance(tsn, GaussianEncoder):
            return tsn.forward_gaussian(x)
        return tsn(x), None

    def forward_train(self, x: torch.Tensor, *, sample: bool = True) -> FactorOutput:
        z_c, stages = self.ckn.forward_stages(x)
        out = FactorOutput(z_c=z_c, stages=stages, z={}, mu={}, logvar={}, logits={}, aux_logits={})
        for name in self.task_names:
            mu, logvar = self.encode_task(name, x)
            z = mu
            if sample and logvar is not None:
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            out.z[name], out.mu[name], out.logvar[name] = z, mu, logvar
            out.logits[name] = self.head[_key(name)](z_c + z)
            out.aux_logits[name] = self.aux_head[_key(name)](z)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference: per-task logits, TSNs at their means."""
        z_c = self.ckn(x)
        return {n: self.head[_key(n)](z_c + self.encode_task(n, x)[0]) for n in self.task_names}

    def ckn_part(self) -> CknPart:
        # The part shares its modules with this network: it must start in the same train/eval mode, or anyone
        # who restores the part's mode afterwards (export does) flips BatchNorm in the shared CKN to train.
        return CknPart(self.ckn).train(self.training)

    def task_part(self, name: str) -> TaskPart:
        self.task(name)
        tsn, head = self.tsn[_key(name)], self.head[_key(name)]
        assert isinstance(tsn, Backbone) and isinstance(head, nn.Linear)
        return TaskPart(tsn, head).train(self.training)


def _key(task: str) -> str:
    # ModuleDict keys may not shadow nn.Module attributes ("half", "train", "type", ...): prefix them.
    return f"task_{task}"


class CknPart(nn.Module):
    """Exportable ``x -> z_c``."""

    def __init__(self, ckn: Backbone) -> None:
        super().__init__()
        self.ckn = ckn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z_c: torch.Tensor = self.ckn(x)
        return z_c


class TaskPart(nn.Module):
    """Exportable ``(x, z_c) -> logits_i``: TSN_i at its mean, then head_i on ``z_c + z_i``."""

    def __init__(self, tsn: Backbone, head: nn.Linear) -> None:
        super().__init__()
        self.tsn = tsn
        self.head = head

    def forward(self, x: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(z_c + self.tsn(x))
        return logits
