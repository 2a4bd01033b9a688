"""The training loop shared by factorization and teacher fitting, with its config, callbacks and checkpoints.

The loop reads top to bottom: seeded per-epoch shuffles, a step, callbacks, periodic checkpoints. Every source
of randomness is re-derived from the seed, the epoch and the saved torch RNG state, so a run resumed from a
checkpoint ends with the same weights as an uninterrupted one. Checkpoints are plain tensors and JSON strings,
read back with ``torch.load(weights_only=True)``.

In several processes (:mod:`kf_core.distributed`) a global batch of ``batch_size`` is split evenly across them
by a DistributedSampler over a shuffle that depends only on (seed, epoch), so a step means the same samples whatever
the number of processes: a checkpoint written by N processes resumes with M. Metrics are averaged across
processes; callbacks, evaluation and checkpoint writing happen on rank 0 only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from kf_core.data.base import ArrayDataset
from kf_core.distributed import SINGLE, Dist
from kf_core.errors import CheckpointError, ConfigError, TrainingCancelled

__all__ = ["Callback", "TrainConfig", "TrainState", "data_fingerprint", "fingerprint", "resolve_device", "run_loop"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and IMB loss settings. Defaults are the paper's where it has one."""

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "adam"  # "adam" or "sgd" (momentum below)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # "cosine" (per step, to 0) or "constant"
    grad_clip: float | None = None  # max global grad norm; the paper uses 35 on CIFAR
    lambda_kd: float = 0.1  # distillation weight
    lambda_feat: float = 1.0  # InfoMax (CKN <-> teacher features) weight
    beta: float = 1e-3  # bottleneck (KL to N(0, I)) weight on each TSN
    task_weight: float = 1.0  # weight of the TSN-only auxiliary head's cross-entropy
    temperature: float = 2.0  # KD temperature T (paper: 10 for CIFAR/ImageNet, 2 for small students)
    kd: str = "kl"  # "kl" (soft targets) or "mse" (logit matching); class-subset tasks always use "mse"
    infomax: str = "dv"  # "dv" (the paper's bound) or "infonce"
    label_smoothing: float = 0.1
    # "random" (the paper's) or "teacher": the CKN starts from the teacher's backbone weights, which needs a CKN of
    # the backbone's architecture and a teacher that keeps its modules (Teacher.backbone_state); a head start for
    # short budgets such as kf demo's
    ckn_init: str = "random"
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: only at the end of each epoch)
    eval_every: int = 1  # evaluate on eval data every N epochs (0: never)
    device: str = "auto"  # "auto" (CUDA if available), "cpu" or "cuda"
    processes: int = 1  # training processes a launcher starts (kf factorize --nproc); each takes batch/processes

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "optimizer": self.optimizer in ("adam", "sgd"),
            "schedule": self.schedule in ("cosine", "constant"),
            "kd": self.kd in ("kl", "mse"),
            "infomax": self.infomax in ("dv", "infonce"),
            "ckn_init": self.ckn_init in ("random", "teacher"),
            "temperature": self.temperature > 0,
            "device": self.device in ("auto", "cpu", "cuda"),
            "processes": 1 <= self.processes <= 256,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid training config value(s) for {', '.join(bad)}: {self.to_json()}")
        if self.batch_size % self.processes:
            raise ConfigError(
                f"batch_size {self.batch_size} does not split evenly over {self.processes} processes; "
                "make it a multiple of processes"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


@dataclass
class TrainState:
    """Where the loop is; callbacks read it and may set ``cancel``."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # running means of the current epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    cancel: bool = False


class Callback:
    """Hooks into the loop (minGPT style). Override what you need; set ``state.cancel`` to stop."""

    def on_train_start(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_checkpoint(self, state: TrainState, path: Path) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but torch sees no CUDA device; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


StepFn = Callable[[np.ndarray], tuple[torch.Tensor, dict[str, torch.Tensor]]]
EvalFn = Callable[[], dict[str, float]]


class _Indices(Dataset[int]):
    """The sampler only needs the dataset's length: the loop indexes the data itself."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def run_loop(
    *,
    module: nn.Module,
    step_fn: StepFn,
    n_samples: int,
    cfg: TrainConfig,
    fingerprint: str,
    callbacks: Sequence[Callback],
    checkpoint: Path | None,
    eval_fn: EvalFn | None,
    dist: Dist = SINGLE,
) -> TrainState:
    """Train ``module`` by calling ``step_fn(batch_indices) -> (loss, metrics)`` over seeded shuffles.

    With ``dist`` spanning several processes, ``step_fn`` gets this process's share of each global batch and
    must run the forward pass through the DistributedDataParallel wrapper of ``module``.
    """
    world = dist.world_size
    batch = min(cfg.batch_size, n_samples // world * world)
    if batch < world or batch % world:
        raise ConfigError(
            f"batch_size {cfg.batch_size} with {n_samples} samples does not split evenly over {world} processes; "
            "make it a multiple of the number of processes"
        )
    local = batch // world
    state = TrainState(steps_per_epoch=max(1, n_samples // batch), epochs=cfg.epochs)  # drop the ragged tail
    total_steps = state.steps_per_epoch * cfg.epochs
    params = [p for p in module.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # The sampler deals every world-th position to each rank; the positions index a shuffle that depends only on
    # (seed, epoch), so the union of the ranks' shares at a step is the single-process batch of that step.
    sampler: DistributedSampler[int] = DistributedSampler(
        _Indices(n_samples), num_replicas=world, rank=dist.rank, shuffle=False, drop_last=True
    )
    positions = np.fromiter(iter(sampler), dtype=np.int64)
    callbacks = callbacks if dist.is_main else ()

    def lr_factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    sums: dict[str, float] = {}
    if checkpoint is not None:
        sums = _load_checkpoint(checkpoint, fingerprint, module, opt, state, dist)
    for cb in callbacks:
        cb.on_train_start(state)

    module.train()
    while state.epoch < cfg.epochs:
        # The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
        order = np.random.default_rng([cfg.seed, state.epoch]).permutation(n_samples)[positions]
        if state.step_in_epoch == 0:
            torch.manual_seed(_torch_seed(cfg.seed, state.epoch, dist.rank))
            sums = {}
        while state.step_in_epoch < state.steps_per_epoch:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(state.global_step)
            s = state.step_in_epoch
            loss, metrics = step_fn(np.sort(order[s * local : (s + 1) * local]))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            # One collective (and one device sync) per step for the loss and all metrics, not one per metric.
            reduced = dist.all_mean(torch.stack([v.detach().float().reshape(()) for v in (loss, *metrics.values())]))
            values = reduced.tolist()
            if not math.isfinite(values[0]):  # every process sees the same mean, so all stop together
                raise ConfigError(
                    f"the loss became {values[0]} at epoch {state.epoch} step {s}; lower the learning rate"
                )
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            state.step_in_epoch += 1
            state.global_step += 1
            for k, v in zip(metrics, values[1:], strict=True):
                sums[k] = sums.get(k, 0.0) + v
            state.metrics = {k: v / state.step_in_epoch for k, v in sums.items()}
            for cb in callbacks:
                cb.on_step_end(state)
            state.cancel = dist.any(state.cancel)
            if state.cancel:
                raise TrainingCancelled(f"cancelled at epoch {state.epoch} step {state.step_in_epoch}")
            mid_epoch = state.step_in_epoch < state.steps_per_epoch
            due = cfg.checkpoint_every > 0 and state.global_step % cfg.checkpoint_every == 0
            if checkpoint is not None and mid_epoch and due:
                _save_checkpoint(checkpoint, fingerprint, module, opt, state, sums, callbacks, dist)
        row = {"epoch": float(state.epoch + 1), **state.metrics}
        if eval_fn is not None and dist.is_main and cfg.eval_every and (state.epoch + 1) % cfg.eval_every == 0:
            module.eval()
            row.update(eval_fn())
            module.train()
        state.history.append(row)
        state.epoch += 1
        state.step_in_epoch = 0
        for cb in callbacks:
            cb.on_epoch_end(state)
        state.cancel = dist.any(state.cancel)
        if state.cancel:
            raise TrainingCancelled(f"cancelled after epoch {state.epoch}")
        if checkpoint is not None:
            _save_checkpoint(checkpoint, fingerprint, module, opt, state, {}, callbacks, dist)
    module.eval()
    return state


def _torch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one process for one epoch (rank 0's is the single-process seed)."""
    return seed * 100_003 + epoch + 7_919 * rank


def _save_checkpoint(
    path: Path,
    fingerprint: str,
    module: nn.Module,
    opt: torch.optim.Optimizer,
    state: TrainState,
    sums: dict[str, float],
    callbacks: Sequence[Callback],
    dist: Dist,
) -> None:
    """Rank 0 writes; weights and optimiser state are the same on every process, the RNG states are gathered."""
    rngs = dist.gather(torch.get_rng_state())
    if not dist.is_main:
        return
    payload = {
        "format": "kf-checkpoint/1",
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "global_step": state.global_step,
        "model": module.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rngs[0],
        "rng_per_process": torch.stack(rngs),  # one row per process: an exact resume with as many processes
        "history": json.dumps(state.history),
        "sums": json.dumps(sums),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint behind
    for cb in callbacks:
        cb.on_checkpoint(state, path)


def _read_checkpoint(path: Path, fingerprint: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(payload, None)``, ``(None, None)`` when there is no checkpoint, or ``(None, why it is unusable)``."""
    if not path.exists():
        return None, None
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, unpickling refused
        return None, f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to restart"
    if payload.get("format") != "kf-checkpoint/1" or payload.get("fingerprint") != fingerprint:
        return None, (
            f"checkpoint {path} was written by a different run (other data, tasks or config); "
            "delete it or point the run at a fresh checkpoint path"
        )
    return payload, None


def _load_checkpoint(
    path: Path, fingerprint: str, module: nn.Module, opt: torch.optim.Optimizer, state: TrainState, dist: Dist
) -> dict[str, float]:
    """Rank 0 reads the checkpoint and every process gets the same copy (no shared file system needed)."""
    payload, error = dist.broadcast(_read_checkpoint(path, fingerprint) if dist.is_main else None)
    if error is not None:
        raise CheckpointError(error)
    if payload is None:
        return {}
    module.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optimizer"])
    state.epoch, state.step_in_epoch = int(payload["epoch"]), int(payload["step_in_epoch"])
    state.global_step = int(payload["global_step"])
    rngs = payload.get("rng_per_process")
    if rngs is not None and len(rngs) == dist.world_size:
        torch.set_rng_state(rngs[dist.rank].clone())  # a row view would hand torch the wrong storage
    elif dist.world_size == 1:
        torch.set_rng_state(payload["rng"])
    else:  # another number of processes: a fresh, still deterministic, stream per process
        torch.manual_seed(_torch_seed(state.global_step, state.epoch, dist.rank))
    state.history = json.loads(payload["history"])
    sums: dict[str, float] = json.loads(payload["sums"])
    return sums


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def data_fingerprint(ds: ArrayDataset) -> str:
    h = hashlib.sha256(np.ascontiguousarray(ds.x[:: max(1, len(ds) // 256)]).tobytes())
    for k in sorted(ds.labels):
        h.update(k.encode())
        h.update(np.ascontiguousarray(ds.labels[k]).tobytes())
    return f"{len(ds)}:{h.hexdigest()}"
