"""The multi-task knowledge-distillation baseline that factorization is compared against.

One shared network with one linear head per task, trained on the same data, epochs, batch size, optimiser and
seed as the factorization, with only the distillation and supervised terms of the IMB objective:
``L = sum_i lambda_kd * KD_i + CE_i`` (same KD mode, temperature and label smoothing as the recipe). No InfoMax,
no auxiliary heads, no bottleneck. The shared network is the recipe's CKN architecture with its ``width``
chosen so that its parameter count (backbone + heads) matches the factor set's inference parameters
(CKN + every TSN + every head; the training-only auxiliary heads and InfoMax projectors are not counted).

A multi-task student has no task-specific features: its "feature of task i" is the one shared representation
(the input of every head), so its leakage is measured from that representation for every task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kf_core.accuracy import labelled_accuracy
from kf_core.data.base import ArrayDataset
from kf_core.errors import ModelFileError
from kf_core.factor import FactorNet, NetSpec
from kf_core.loop import Callback, TrainConfig, data_fingerprint, fingerprint, resolve_device, run_loop
from kf_core.tasks import TaskSpec, task_labels, validate_tasks
from kf_core.teacher import MultiHeadNet, Teacher

# The teacher-target pass and label rule are the factorization's own, so both models see identical targets.
from kf_core.train import batch_images, labels_for, run_defining_config, supervised_terms, teacher_targets

__all__ = ["BaselineRun", "count_parameters", "factor_parameters", "load_baseline", "match_width", "train_baseline"]

BASELINE_SPEC = "baseline.json"
BASELINE_WEIGHTS = "baseline.safetensors"


@dataclass
class BaselineRun:
    """A trained multi-task student and how it was made."""

    model: MultiHeadNet
    spec: NetSpec  # backbone architecture, width included
    feature_dim: int  # width of the shared representation the heads read
    input_shape: tuple[int, ...]
    tasks: list[TaskSpec]
    parameters: int  # backbone + heads
    target_parameters: int  # the factor set's inference parameters it was matched to
    history: list[dict[str, float]]
    wall_seconds: float


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def factor_parameters(model: FactorNet) -> int:
    """Inference parameters of a factor set: CKN + every TSN + every head (what an all-task assembly runs)."""
    return count_parameters(model.ckn) + count_parameters(model.tsn) + count_parameters(model.head)


def _build(spec: NetSpec, input_shape: tuple[int, ...], feature_dim: int, heads: Mapping[str, int]) -> MultiHeadNet:
    return MultiHeadNet(spec.build(input_shape=input_shape, feature_dim=feature_dim), heads)


def match_width(
    ckn: NetSpec, *, target: int, input_shape: tuple[int, ...], feature_dim: int, heads: Mapping[str, int]
) -> tuple[NetSpec, int]:
    """The CKN architecture at the ``width`` whose parameter count (with heads) is closest to ``target``."""

    def params(width: float) -> int:
        spec = NetSpec(ckn.name, {**ckn.kwargs, "width": width})
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            return count_parameters(_build(spec, input_shape, feature_dim, heads))

    lo, hi = 0.05, 1.0
    while params(hi) < target and hi < 64:
        lo, hi = hi, hi * 2
    for _ in range(30):  # parameters grow monotonically with width (channel counts are rounded)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if params(mid) < target else (lo, mid)
    width = min((lo, hi), key=lambda w: abs(params(w) - target))
    return NetSpec(ckn.name, {**ckn.kwargs, "width": round(width, 4)}), params(round(width, 4))


def train_baseline(
    *,
    teacher: Teacher,
    train: ArrayDataset,
    tasks: Sequence[TaskSpec],
    ckn: NetSpec,
    feature_dim: int,
    target_parameters: int,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    eval_data: ArrayDataset | None = None,
) -> BaselineRun:
    """Train the multi-task KD student (see the module docstring) through :func:`kf_core.loop.run_loop`."""
    started = time.perf_counter()
    cfg = train_config
    tasks = validate_tasks(tasks, teacher.output_sizes)
    teacher.check_input(train.input_shape)
    heads = {t.name: t.num_classes(teacher.output_sizes) for t in tasks}
    spec, n_params = match_width(
        ckn, target=target_parameters, input_shape=train.input_shape, feature_dim=feature_dim, heads=heads
    )
    device = resolve_device(cfg.device)
    teacher.to(device)
    t_logits, _ = teacher_targets(teacher, train, device)
    labels = {t.name: labels_for(t, train, t_logits) for t in tasks}
    classes = {t.name: torch.tensor(t.class_index(teacher.output_sizes)) for t in tasks}

    torch.manual_seed(cfg.seed)
    net = _build(spec, train.input_shape, feature_dim, heads).to(device)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format

    def step(idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ti = torch.from_numpy(idx)
        logits, _ = net.forward_all(batch_images(train, idx, device))
        total = torch.zeros((), device=device)
        metrics: dict[str, torch.Tensor] = {}
        for t in tasks:
            target = t_logits[t.output][ti][:, classes[t.name]].to(device)
            y = labels[t.name][ti].to(device)
            l_kd, l_cls, acc = supervised_terms(t, logits[t.name], target, y, cfg)  # the same terms as factorize
            total = total + cfg.lambda_kd * l_kd + l_cls
            metrics[f"{t.name}/loss_kd"] = l_kd
            metrics[f"{t.name}/loss_cls"] = l_cls
            metrics[f"{t.name}/train_acc"] = acc
        metrics["loss"] = total
        return total, metrics

    def evaluate() -> dict[str, float]:
        assert eval_data is not None
        acc = baseline_accuracy(net, eval_data, tasks, device=device)
        return {f"{k}/test_acc": v for k, v in acc.items()}

    run_id = fingerprint(
        "baseline",
        [t.to_json() for t in tasks],
        spec.to_json(),
        feature_dim,
        run_defining_config(cfg),
        data_fingerprint(train),
        teacher.output_sizes,
    )
    state = run_loop(
        module=net,
        step_fn=step,
        n_samples=len(train),
        cfg=cfg,
        fingerprint=run_id,
        callbacks=callbacks,
        checkpoint=Path(checkpoint) if checkpoint else None,
        eval_fn=evaluate if eval_data is not None and cfg.eval_every else None,
    )
    net.cpu().eval()
    return BaselineRun(
        model=net,
        spec=spec,
        feature_dim=feature_dim,
        input_shape=train.input_shape,
        tasks=list(tasks),
        parameters=n_params,
        target_parameters=int(target_parameters),
        history=state.history,
        wall_seconds=time.perf_counter() - started,
    )


def baseline_accuracy(
    net: MultiHeadNet, data: ArrayDataset, tasks: Sequence[TaskSpec], *, device: torch.device | None = None
) -> dict[str, float]:
    """Per-task test accuracy of the student; class-subset tasks are scored on samples of their classes."""
    was_training = net.training
    net.eval()
    labels = {t.name: task_labels(t, data.labels[t.label_column]) for t in tasks}
    try:
        return labelled_accuracy(lambda x: net.forward_all(x)[0], data, labels, device=device)
    finally:
        net.train(was_training)


def save_baseline(run: BaselineRun, out_dir: str | Path, *, key: str) -> Path:
    """Write ``baseline.safetensors`` and ``baseline.json``; ``key`` identifies what it was trained from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, str(out / BASELINE_WEIGHTS))
    doc = {
        "format": "kf-baseline/1",
        "key": key,
        "backbone": run.spec.to_json(),
        "feature_dim": run.feature_dim,
        "input_shape": list(run.input_shape),
        "tasks": [t.to_json() for t in run.tasks],
        "heads": {n: run.model.num_classes(n) for n in run.model.head_names},
        "parameters": run.parameters,
        "target_parameters": run.target_parameters,
        "history": run.history,
        "wall_seconds": run.wall_seconds,
    }
    (out / BASELINE_SPEC).write_text(json.dumps(doc, indent=2))
    return out


def load_baseline(out_dir: str | Path, *, key: str) -> BaselineRun | None:
    """The baseline saved in ``out_dir`` if it was trained from ``key``; None when absent or stale."""
    out = Path(out_dir)
    try:
        doc: dict[str, Any] = json.loads((out / BASELINE_SPEC).read_text())
    except (OSError, ValueError):
        return None
    if doc.get("format") != "kf-baseline/1" or doc.get("key") != key:
        return None
    try:
        spec = NetSpec.from_json(doc["backbone"])
        shape = tuple(int(v) for v in doc["input_shape"])
        net = _build(spec, shape, int(doc["feature_dim"]), doc["heads"])
        net.load_state_dict(load_file(str(out / BASELINE_WEIGHTS)))
    except (OSError, SafetensorError, RuntimeError, KeyError, ValueError) as e:
        raise ModelFileError(f"{out} holds a baseline that cannot be loaded ({e}); delete the directory") from e
    return BaselineRun(
        model=net.eval(),
        spec=spec,
        feature_dim=int(doc["feature_dim"]),
        input_shape=shape,
        tasks=[TaskSpec.from_json(t) for t in doc["tasks"]],
        parameters=int(doc["parameters"]),
        target_parameters=int(doc["target_parameters"]),
        history=list(doc["history"]),
        wall_seconds=float(doc["wall_seconds"]),
    )
