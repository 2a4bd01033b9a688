"""Transfer of the common knowledge: does z_c carry a task the factorization never saw?

Protocol: factorize the teacher on every task but one (the *held-out* task), with the run's own recipe, data,
budget and seed; then fit a linear probe (:mod:`kf_core.evaluation.probe`) for the held-out task on three frozen
representations of the same images and compare their test accuracies:

- ``ckn``: z_c of the factor set trained without the held-out task, and ``ckn_stage``: that CKN's pooled last
  stage, the feature the InfoMax term matches against the teacher's (z_c is a Linear of it, trained only by
  the factorized tasks' heads, so it can drop what those heads do not use);
- ``teacher``: the teacher's penultimate features (for a :class:`~kf_core.teacher.TorchTeacher`, the backbone
  output its linear heads read; for ONNX / TorchScript teachers, the last stage feature they expose, or their
  concatenated logits when they expose none), and for the former also ``teacher_stage``, its pooled last
  stage. The teacher was trained *with* the held-out task: this is the reference, not a floor;
- ``random_ckn`` and ``random_ckn_stage``: the same two features of a randomly initialised CKN of the same
  architecture (seeded), the floor that shows how much a linear probe gets from architecture alone.

On dSprites the held-out task defaults to ``shape``: the other four factors (scale, orientation, position)
are geometric transforms of one object, so ``shape`` is the one factor that the remaining tasks never
need to know, it has three balanced classes (accuracy is well measured), and the teacher learns it well,
so the teacher reference is meaningful. ``orientation`` would be a poor probe (the square's and
ellipse's symmetries make it partly undecidable), and position and scale are read well even by random
convolutions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kf_core.data.base import ArrayDataset
from kf_core.errors import ConfigError, ModelFileError, UnknownTaskError
from kf_core.evaluation.probe import probe_accuracy
from kf_core.factor import FactorConfig, FactorNet
from kf_core.loop import Callback, TrainConfig
from kf_core.nets.base import Backbone
from kf_core.tasks import TaskSpec
from kf_core.teacher import Teacher, TorchTeacher
from kf_core.train import factorize

__all__ = ["default_held_out", "fit_transfer_factors", "random_ckn", "teacher_feature_fn", "transfer_probe"]

TRANSFER_SPEC = "transfer.json"
TRANSFER_WEIGHTS = "factors.safetensors"


def default_held_out(task_names: Sequence[str]) -> str:
    """``shape`` when the run has it (see the module docstring), else the first task."""
    if len(task_names) < 2:
        raise ConfigError("the transfer probe needs at least two tasks: one to hold out and one to factorize")
    return "shape" if "shape" in task_names else task_names[0]


def teacher_feature_fn(teacher: Teacher) -> tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], str]:
    """A function giving the teacher's features, and a description of them.

    The function returns ``{"teacher": penultimate}`` and, for a :class:`TorchTeacher`, also
    ``{"teacher_stage": pooled last stage}`` (the feature the CKN's InfoMax term is matched to).
    """
    if isinstance(teacher, TorchTeacher):
        backbone = teacher.net.backbone
        # channels_last halves CPU convolution time and leaves every value as it was.
        backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        def views(x: torch.Tensor) -> dict[str, torch.Tensor]:
            feature, stages = backbone.forward_stages(x)
            return {"teacher": feature, "teacher_stage": stages[-1]}

        return views, "backbone output (the input of the teacher's linear heads)"
    if teacher.feature_dims:
        return (lambda x: {"teacher": teacher(x).features[-1]}), "last stage feature the teacher exposes"

    def logits(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = teacher(x).logits
        return {"teacher": torch.cat([out[k] for k in sorted(out)], dim=1)}

    return logits, "concatenated logits (the teacher exposes no features)"


def random_ckn(config: FactorConfig, input_shape: tuple[int, ...], *, seed: int) -> Backbone:
    """The CKN architecture at its random initialisation (seeded), in eval mode."""
    torch.manual_seed(seed)
    return config.ckn.build(input_shape=input_shape, feature_dim=config.feature_dim).eval()


def fit_transfer_factors(
    *,
    teacher: Teacher,
    train: ArrayDataset,
    tasks: Sequence[TaskSpec],
    held_out: str,
    factor_config: FactorConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    key: str,
    callbacks: Sequence[Callback] = (),
) -> tuple[FactorNet, float, bool]:
    """The factor set trained on every task but ``held_out``: ``(model, train_seconds, trained_now)``.

    Cached in ``out_dir`` under ``key`` (which must identify teacher, data and recipe); training resumes from
    ``out_dir/checkpoint.pt`` if it was interrupted.
    """
    names = [t.name for t in tasks]
    if held_out not in names:
        raise UnknownTaskError("task", held_out, names)
    kept = [t for t in tasks if t.name != held_out]
    out = Path(out_dir)
    cached = _load(out, key, kept, factor_config, train.input_shape, teacher.output_sizes)
    if cached is not None:
        return cached[0], cached[1], False
    run = factorize(
        teacher=teacher,
        train=train,
        tasks=kept,
        factor_config=factor_config,
        train_config=train_config,
        callbacks=callbacks,
        checkpoint=out / "checkpoint.pt",
    )

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, str(out / TRANSFER_WEIGHTS))
    doc: dict[str, Any] = {
        "format": "kf-transfer/1",
        "key": key,
        "held_out": held_out,
        "tasks": [t.to_json() for t in kept],
    }
    doc.update({"history": run.history, "wall_seconds": run.wall_seconds})
    (out / TRANSFER_SPEC).write_text(json.dumps(doc, indent=2))
    (out / "checkpoint.pt").unlink(missing_ok=True)  # the saved weights supersede it
    return run.model, run.wall_seconds, True


def _load(
    out: Path,
    key: str,
    tasks: Sequence[TaskSpec],
    config: FactorConfig,
    input_shape: tuple[int, ...],
    output_sizes: Mapping[str, int],
) -> tuple[FactorNet, float] | None:
    try:
        doc: dict[str, Any] = json.loads((out / TRANSFER_SPEC).read_text())
    except (OSError, ValueError):
        return None
    if doc.get("format") != "kf-transfer/1" or doc.get("key") != key:
        return None
    model = FactorNet(
        input_shape=input_shape,
        tasks=tasks,
        num_classes={t.name: t.num_classes(output_sizes) for t in tasks},
        config=config,
    )
    try:
        model.load_state_dict(load_file(str(out / TRANSFER_WEIGHTS)))
    except (OSError, SafetensorError, RuntimeError) as e:
        raise ModelFileError(f"{out} holds transfer weights that cannot be loaded ({e}); delete the directory") from e
    return model.eval(), float(doc.get("wall_seconds", 0.0))


def transfer_probe(
    features: Mapping[str, tuple[np.ndarray, np.ndarray]],
    train_y: np.ndarray,
    test_y: np.ndarray,
    *,
    l2: float = 1e-4,
    max_iter: int = 100,
) -> dict[str, Any]:
    """Probe each representation ``name -> (train features, test features)`` for the held-out labels.

    Returns per representation ``{"accuracy", "chance", "normalised", "dim"}`` and, for each pair present, the
    difference in accuracy points: ``ckn_minus_random_points``, ``ckn_stage_minus_random_stage_points`` and
    ``ckn_minus_teacher_points``.
    """
    rows: dict[str, dict[str, float]] = {}
    for name, (tr, te) in features.items():
        score = probe_accuracy(tr, {"y": train_y}, te, {"y": test_y}, l2=l2, max_iter=max_iter)["y"]
        rows[name] = {**score, "dim": int(tr.shape[1])}
    out: dict[str, Any] = {"features": rows}
    pairs = {
        "ckn_minus_random_points": ("ckn", "random_ckn"),
        "ckn_stage_minus_random_stage_points": ("ckn_stage", "random_ckn_stage"),
        "ckn_minus_teacher_points": ("ckn", "teacher"),
    }
    for key, (a, b) in pairs.items():
        if a in rows and b in rows:
            out[key] = 100 * (rows[a]["accuracy"] - rows[b]["accuracy"])
    return out
