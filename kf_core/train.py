"""Factorization (:func:`factorize`) and teacher fitting (:func:`fit_teacher`) on top of :mod:`kf_core.loop`.

The teacher is frozen and the data is not augmented, so its logits and features are computed once for the
whole training set before the first epoch instead of once per step: on CPU that is most of a teacher's cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kf_core import losses
from kf_core.accuracy import factor_accuracy, labelled_accuracy
from kf_core.data.base import ArrayDataset
from kf_core.distributed import SINGLE, Dist
from kf_core.errors import ConfigError
from kf_core.factor import FactorConfig, FactorNet, NetSpec
from kf_core.loop import Callback, TrainConfig, data_fingerprint, fingerprint, resolve_device, run_loop
from kf_core.tasks import TaskSpec, task_labels, validate_tasks
from kf_core.teacher import MultiHeadNet, Teacher, TorchTeacher

__all__ = [
    "FactorRun",
    "InfoMaxCritic",
    "batch_images",
    "distillation_loss",
    "factorize",
    "fit_teacher",
    "init_ckn_from_teacher",
    "labels_for",
    "run_defining_config",
    "teacher_targets",
]


@dataclass
class FactorRun:
    """The result of :func:`factorize`."""

    model: FactorNet
    tasks: list[TaskSpec]
    history: list[dict[str, float]]
    wall_seconds: float


class InfoMaxCritic(nn.Module):
    """Per matched stage, the projector g_l (Linear, BN, ReLU, Linear) from teacher width to CKN width."""

    def __init__(self, teacher_dims: Sequence[int], student_dims: Sequence[int]) -> None:
        super().__init__()
        n = min(len(teacher_dims), len(student_dims))
        pairs = list(zip(teacher_dims[-n:], student_dims[-n:], strict=True))
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Linear(t, s), nn.BatchNorm1d(s), nn.ReLU(inplace=True), nn.Linear(s, s)) for t, s in pairs
        )


Objective = Callable[[FactorNet, InfoMaxCritic, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, Any]]]


class _Trainee(nn.Module):
    """Everything the optimiser updates: the factor network and the InfoMax projectors.

    Its forward pass is the whole IMB objective of one batch, so that in several processes every parameter is
    used inside one DistributedDataParallel forward (which is what its gradient averaging hooks expect).
    """

    def __init__(self, model: FactorNet, critic: InfoMaxCritic, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.critic = critic
        self.objective = objective

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.objective(self.model, self.critic, x, idx)


def init_ckn_from_teacher(model: FactorNet, teacher: Teacher) -> None:
    """Copy the teacher's backbone weights into the CKN (``TrainConfig.ckn_init == "teacher"``), or a clear error
    unless the teacher keeps its backbone module with exactly the CKN's parameter names and shapes."""
    state = teacher.backbone_state()
    if state is None:
        raise ConfigError(
            f"ckn_init='teacher' needs a teacher that keeps its backbone module (fitted by kf, or TorchScript traced "
            f"from one); this teacher ({type(teacher).__name__}) does not: use ckn_init='random'"
        )
    want = {k: tuple(v.shape) for k, v in model.ckn.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        differ = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise ConfigError(
            "ckn_init='teacher' needs a CKN of the teacher backbone's architecture; they differ at "
            f"{', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}: use ckn_init='random'"
        )
    model.ckn.load_state_dict(state)


@torch.no_grad()
def teacher_targets(
    teacher: Teacher, data: ArrayDataset, device: torch.device, batch: int = 512, dist: Dist = SINGLE
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The teacher's logits and features for every sample; in several processes each computes a share."""
    rows = dist.shard(len(data))
    # An empty share (more processes than samples per process) still runs one sample to learn the shapes.
    chunks = [slice(a, min(rows.stop, a + batch)) for a in range(rows.start, rows.stop, batch)] or [slice(0, 0)]
    logits: dict[str, list[torch.Tensor]] = {}
    feats: list[list[torch.Tensor]] = []
    for sl in chunks:
        keep = sl.stop - sl.start
        out = teacher(torch.from_numpy(data.images(sl if keep else slice(0, 1))).to(device))
        for k, v in out.logits.items():
            logits.setdefault(k, []).append(v[:keep].float().cpu())
        if not feats:
            feats = [[] for _ in out.features]
        for i, f in enumerate(out.features):
            feats[i].append(f[:keep].float().cpu())
    n = len(data)
    return (
        {k: dist.gather_rows(torch.cat(v), n) for k, v in logits.items()},
        [dist.gather_rows(torch.cat(f), n) for f in feats],
    )


def factorize(
    *,
    teacher: Teacher,
    train: ArrayDataset,
    tasks: Sequence[TaskSpec],
    factor_config: FactorConfig,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    eval_data: ArrayDataset | None = None,
    dist: Dist = SINGLE,
) -> FactorRun:
    """Factorize ``teacher`` into a CKN and one TSN + head per task with the IMB objective.

    If ``checkpoint`` exists and belongs to this exact run, training resumes from it; it is rewritten at the
    end of every epoch (and every ``checkpoint_every`` steps). With ``dist`` spanning several processes, every
    process calls this with the same arguments: training is data parallel (DistributedDataParallel), and only
    rank 0 runs the callbacks, the evaluation and reads or writes the checkpoint.
    """
    started = time.perf_counter()
    cfg = train_config
    tasks = validate_tasks(tasks, teacher.output_sizes)
    teacher.check_input(train.input_shape)
    device = dist.place(resolve_device(cfg.device))
    teacher.to(device)
    t_logits, t_feats = teacher_targets(teacher, train, device, dist=dist)
    if not t_feats:  # no stage features exposed: the logits stand in for the teacher's representation X
        t_feats = [torch.cat([t_logits[k] for k in sorted(t_logits)], dim=1)]
    labels = {t.name: labels_for(t, train, t_logits) for t in tasks}
    classes = {t.name: torch.tensor(t.class_index(teacher.output_sizes)) for t in tasks}

    torch.manual_seed(cfg.seed)
    model = FactorNet(
        input_shape=train.input_shape,
        tasks=tasks,
        num_classes={t.name: t.num_classes(teacher.output_sizes) for t in tasks},
        config=factor_config,
    )
    if cfg.ckn_init == "teacher":
        init_ckn_from_teacher(model, teacher)
    critic = InfoMaxCritic([f.shape[1] for f in t_feats], model.ckn.stage_dims)
    infomax = losses.infomax_loss if cfg.infomax == "dv" else losses.infonce_loss

    def objective(
        model: FactorNet, critic: InfoMaxCritic, x: torch.Tensor, ti: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        # In several processes the InfoMax negatives are the other images of this process's share of the batch,
        # and BatchNorm normalises with this share's statistics: both per process, as in the paper's code.
        out = model.forward_train(x)
        n = len(critic.proj)
        l_feat = torch.zeros((), device=device)
        for i, g in enumerate(critic.proj):  # the last n teacher stages against the last n CKN stages
            l_feat = l_feat + infomax(g(t_feats[i - n][ti].to(device)), out.stages[i - n]) / n
        total = cfg.lambda_feat * l_feat
        metrics = {"loss_infomax": l_feat}
        for t in tasks:
            target = t_logits[t.output][ti][:, classes[t.name]].to(device)
            y = labels[t.name][ti].to(device)
            l_kd, l_cls, acc = supervised_terms(t, out.logits[t.name], target, y, cfg)
            l_task = losses.label_smoothing_ce(out.aux_logits[t.name], y, cfg.label_smoothing)
            logvar = out.logvar[t.name]
            mu = out.mu[t.name]
            l_min = losses.gaussian_kl(mu, logvar) if logvar is not None else losses.batch_moment_kl(mu)
            total = total + cfg.lambda_kd * l_kd + l_cls + cfg.task_weight * l_task + cfg.beta * l_min
            metrics.update(
                {
                    f"{t.name}/loss_kd": l_kd,
                    f"{t.name}/loss_cls": l_cls,
                    f"{t.name}/loss_task": l_task,
                    f"{t.name}/loss_infomin": l_min,
                    f"{t.name}/train_acc": acc,
                }
            )
        metrics["loss"] = total
        return total, metrics

    # channels_last makes CPU (oneDNN) and CUDA convolutions markedly faster (1.7x for SimpleConv64 on 2 cores).
    trainee = _Trainee(model, critic, objective).to(device)
    trainee.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    net: nn.Module = trainee
    if dist.active:  # the wrapper broadcasts rank 0's initial weights and averages gradients in backward
        net = DistributedDataParallel(trainee, device_ids=[device.index] if device.type == "cuda" else None)

    def step(idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, metrics = net(batch_images(train, idx, device), torch.from_numpy(idx))
        return total, metrics

    def evaluate() -> dict[str, float]:
        assert eval_data is not None
        acc = factor_accuracy(model, eval_data, tasks, device=device)
        return {f"{k}/test_acc": v for k, v in acc.items()}

    run_id = fingerprint(
        "factorize",
        [t.to_json() for t in tasks],
        factor_config.to_json(),
        run_defining_config(cfg),
        data_fingerprint(train),
        teacher.output_sizes,
    )
    state = run_loop(
        module=trainee,
        step_fn=step,
        n_samples=len(train),
        cfg=cfg,
        fingerprint=run_id,
        callbacks=callbacks,
        checkpoint=Path(checkpoint) if checkpoint else None,
        eval_fn=evaluate if eval_data is not None else None,
        dist=dist,
    )
    model.cpu().eval()
    wall = time.perf_counter() - started
    return FactorRun(model=model, tasks=tasks, history=state.history, wall_seconds=wall)


def distillation_loss(task: TaskSpec, student: torch.Tensor, teacher: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The KD term of one task: logit matching for class-subset tasks (their logits are later compared across
    tasks under one softmax, so their level must match the teacher's) or when ``cfg.kd == "mse"``, else soft
    targets at temperature ``cfg.temperature``."""
    if task.is_class_subset or cfg.kd == "mse":
        return losses.logit_mse_loss(student, teacher)
    return losses.kd_loss(student, teacher, cfg.temperature)


def supervised_terms(
    task: TaskSpec, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-task terms every student pays (factorize and the KD baseline alike): the distillation loss
    (:func:`distillation_loss`), the label-smoothed cross-entropy on ``labels`` (-1: unlabelled, skipped), and the
    batch's training accuracy over the labelled rows."""
    l_kd = distillation_loss(task, student, teacher, cfg)
    l_cls = losses.label_smoothing_ce(student, labels, cfg.label_smoothing)
    keep = labels >= 0
    acc = ((student.argmax(1) == labels) & keep).sum() / keep.sum().clamp(min=1)
    return l_kd, l_cls, acc


def run_defining_config(cfg: TrainConfig) -> dict[str, object]:
    """The training options that change the weights a run produces (for checkpoint fingerprints): everything
    but where it runs and how often it evaluates or checkpoints."""
    return {
        k: v
        for k, v in cfg.to_json().items()
        if k not in ("device", "eval_every", "checkpoint_every", "processes")  # a checkpoint resumes on any count
    }


def batch_images(data: ArrayDataset, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(data.images(idx)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x  # images only; vectors as they are


def labels_for(task: TaskSpec, data: ArrayDataset, t_logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Dataset labels for the task where the column exists, else the teacher's argmax (the task term of
    the objective needs a label per sample; without one the teacher's decision is the target)."""
    if task.label_column in data.labels:
        column = data.labels[task.label_column]
    else:
        column = t_logits[task.output].argmax(1).numpy()
    return torch.from_numpy(task_labels(task, column))


# ----------------------------------------------------------------------------------------------------
# Teachers for demos and tests


def fit_teacher(
    *,
    train: ArrayDataset,
    backbone: NetSpec,
    train_config: TrainConfig,
    feature_dim: int | None = None,
    outputs: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    eval_data: ArrayDataset | None = None,
) -> TorchTeacher:
    """Train a multi-head teacher (one head per label column) with plain cross-entropy.

    Users normally bring their own teacher; this exists so demos and tests have one.
    """
    cfg = train_config
    heads = list(outputs or train.labels)
    for h in heads:
        train.column(h)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = MultiHeadNet(
        backbone.build(input_shape=train.input_shape, feature_dim=feature_dim),
        {h: train.num_classes(h) for h in heads},
    ).to(device)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    y_all = {h: torch.from_numpy(train.labels[h]) for h in heads}

    def step(idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, _ = net.forward_all(batch_images(train, idx, device))
        total = torch.zeros((), device=device)
        metrics: dict[str, torch.Tensor] = {}
        for h in heads:
            y = y_all[h][torch.from_numpy(idx)].to(device)
            loss = nn.functional.cross_entropy(logits[h], y)
            total = total + loss
            metrics[f"{h}/loss"] = loss
            metrics[f"{h}/train_acc"] = (logits[h].argmax(1) == y).float().mean()
        metrics["loss"] = total
        return total, metrics

    spec: dict[str, Any] = {"backbone": backbone.to_json(), "feature_dim": feature_dim, "train_config": cfg.to_json()}
    class_names = {h: train.classes[h] for h in heads}

    def evaluate() -> dict[str, float]:
        assert eval_data is not None
        labels = {h: eval_data.labels[h] for h in heads}
        acc = labelled_accuracy(lambda x: net.forward_all(x)[0], eval_data, labels, device=device)
        return {f"{k}/test_acc": v for k, v in acc.items()}

    state = run_loop(
        module=net,
        step_fn=step,
        n_samples=len(train),
        cfg=cfg,
        fingerprint=fingerprint("fit_teacher", spec, heads, data_fingerprint(train)),
        callbacks=callbacks,
        checkpoint=Path(checkpoint) if checkpoint else None,
        eval_fn=evaluate if eval_data is not None else None,
    )
    spec["history"] = state.history
    return TorchTeacher(net.cpu(), input_shape=train.input_shape, class_names=class_names, spec=spec)
