"""Extend an exported factor set with new tasks against its frozen CKN, or narrow it to fewer tasks.

The CKN is read from the exported ``ckn.onnx`` and run once (in ONNX Runtime, exactly as it is served) over the
training data: its ``z_c`` is fixed, so only the new TSN_i + head_i (and the auxiliary head) train. The objective
per new task is the IMB objective without its InfoMax term, which only shapes the CKN::

    L_i = lambda_kd * L_kd(head_i(z_c + z_i), t_i) + L_cls(head_i(z_c + z_i), y_i)
          + task_weight * L_cls(aux_i(z_i), y_i) + beta * KL(q(z_i | x) || N(0, I))

The result is a parts directory whose CKN and old task files are byte-for-byte the base set's (same sha256), so a
catalog that stores files by content reuses them by reference; only the new task parts are new files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kf_core import losses
from kf_core.accuracy import labelled_accuracy, teacher_accuracy
from kf_core.assemble import assemble
from kf_core.data.base import ArrayDataset
from kf_core.data.spec import load_split
from kf_core.errors import ConfigError, ExportMismatchError
from kf_core.export import EXPORT_ATOL, drift, export_module
from kf_core.factor import FactorConfig, NetSpec, TaskPart
from kf_core.loop import Callback, TrainConfig, data_fingerprint, fingerprint, resolve_device, run_loop
from kf_core.nets.base import GaussianEncoder
from kf_core.ort import create_session
from kf_core.parts import FORMAT, MANIFEST, FactorParts, load_parts
from kf_core.recipes import Recipe
from kf_core.report import write_json
from kf_core.shapes import check_input_shape
from kf_core.tasks import TaskSpec, task_labels, validate_tasks
from kf_core.teacher import Teacher
from kf_core.train import labels_for, run_defining_config, supervised_terms, teacher_targets

__all__ = ["ExtendRun", "ckn_features", "extend_tasks", "remove_tasks", "run_extension"]


@dataclass
class ExtendRun:
    """The result of :func:`extend_tasks`: the trained task parts (``(x, z_c) -> logits``), one per new task."""

    parts: dict[str, TaskPart]
    tasks: list[TaskSpec]
    history: list[dict[str, float]]
    wall_seconds: float


class _NewTasks(nn.Module):
    """What the optimiser updates: TSN_i, head_i and aux_i of every new task (the CKN is not in here)."""

    def __init__(self, tasks: Sequence[TaskSpec], classes: dict[str, int], config: FactorConfig, shape: Any) -> None:
        super().__init__()
        d = config.feature_dim
        self.tsn = nn.ModuleDict()
        self.head = nn.ModuleDict()
        self.aux = nn.ModuleDict()
        for t in tasks:
            key = f"task_{t.name}"
            tsn = config.tsn.build(input_shape=shape, feature_dim=d)
            if tsn.feature_dim != d:
                raise ConfigError(f"TSN {config.tsn.name!r} gives width {tsn.feature_dim}, the CKN's is {d}")
            self.tsn[key] = tsn
            self.head[key] = nn.Linear(d, classes[t.name])
            self.aux[key] = nn.Linear(d, classes[t.name])

    def part(self, name: str) -> TaskPart:
        key = f"task_{name}"
        tsn, head = self.tsn[key], self.head[key]
        assert isinstance(head, nn.Linear)
        return TaskPart(tsn, head).train(self.training)  # type: ignore[arg-type]


def ckn_features(parts: FactorParts, data: ArrayDataset | np.ndarray, batch: int = 512) -> np.ndarray:
    """``z_c`` of every sample (a dataset, or float32 images) from the exported CKN, in ONNX Runtime: the served
    computation, batch by batch (a dataset's images are converted to float32 one batch at a time)."""
    session = create_session(parts.ckn)
    images = data.images if isinstance(data, ArrayDataset) else data.__getitem__
    out = [session.run(["z_c"], {"x": images(slice(a, a + batch))})[0] for a in range(0, len(data), batch)]
    return np.concatenate(out).astype(np.float32, copy=False)


def _check_input(parts: FactorParts, shape: Sequence[int]) -> None:
    check_input_shape(parts.manifest["input"]["shape"][1:], shape, what="the factor set")


def extend_tasks(
    *,
    parts: FactorParts,
    teacher: Teacher,
    train: ArrayDataset,
    tasks: Sequence[TaskSpec],
    train_config: TrainConfig,
    tsn: NetSpec | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
) -> ExtendRun:
    """Train TSN_i + head_i for each of ``tasks`` against the frozen CKN of ``parts`` (see the module docstring).

    ``tsn`` overrides the architecture of the new TSNs (default: the factor set's). Checkpoints and resumption
    work as in :func:`kf_core.train.factorize`.
    """
    started = time.perf_counter()
    cfg = train_config
    tasks = validate_tasks(tasks, teacher.output_sizes)
    clash = sorted({t.name for t in tasks} & set(parts.task_names))
    if clash:
        raise ConfigError(f"the factor set already has task(s) {clash}; give the new tasks other names")
    _check_input(parts, train.input_shape)
    teacher.check_input(train.input_shape)
    base = FactorConfig.from_json(parts.manifest["config"])
    config = FactorConfig(ckn=base.ckn, tsn=tsn or base.tsn, feature_dim=base.feature_dim)
    device = resolve_device(cfg.device)
    teacher.to(device)
    t_logits, _ = teacher_targets(teacher, train, device)
    z_c_all = torch.from_numpy(ckn_features(parts, train))
    labels = {t.name: labels_for(t, train, t_logits) for t in tasks}
    classes = {t.name: torch.tensor(t.class_index(teacher.output_sizes)) for t in tasks}
    torch.manual_seed(cfg.seed)
    sizes = {t.name: t.num_classes(teacher.output_sizes) for t in tasks}
    net = _NewTasks(tasks, sizes, config, train.input_shape).to(device)

    def step(idx: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ti = torch.from_numpy(idx)
        x = torch.from_numpy(train.images(idx)).to(device)
        z_c = z_c_all[ti].to(device)
        total = torch.zeros((), device=device)
        metrics: dict[str, torch.Tensor] = {}
        for t in tasks:
            key = f"task_{t.name}"
            encoder = net.tsn[key]
            if isinstance(encoder, GaussianEncoder):
                mu, logvar = encoder.forward_gaussian(x)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                l_min = losses.gaussian_kl(mu, logvar)
            else:
                z = encoder(x)
                l_min = losses.batch_moment_kl(z)
            s = net.head[key](z_c + z)
            y = labels[t.name][ti].to(device)
            l_kd, l_cls, acc = supervised_terms(t, s, t_logits[t.output][ti][:, classes[t.name]].to(device), y, cfg)
            l_task = losses.label_smoothing_ce(net.aux[key](z), y, cfg.label_smoothing)
            total = total + cfg.lambda_kd * l_kd + l_cls + cfg.task_weight * l_task + cfg.beta * l_min
            metrics[f"{t.name}/loss_kd"] = l_kd
            metrics[f"{t.name}/loss_cls"] = l_cls
            metrics[f"{t.name}/train_acc"] = acc
        metrics["loss"] = total
        return total, metrics

    run_id = fingerprint(
        "extend",
        parts.manifest["ckn"]["sha256"],
        [t.to_json() for t in tasks],
        config.to_json(),
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
        eval_fn=None,
    )
    net.cpu().eval()
    return ExtendRun(
        parts={t.name: net.part(t.name) for t in tasks},
        tasks=tasks,
        history=state.history,
        wall_seconds=time.perf_counter() - started,
    )


def run_extension(
    recipe: Recipe,
    teacher: Teacher,
    base_parts: str | Path,
    out_dir: str | Path,
    *,
    tasks: Sequence[TaskSpec],
    callbacks: Sequence[Callback] = (),
    resume: bool = True,
) -> dict[str, Any]:
    """Extend the factor set in ``base_parts`` with ``tasks`` on ``recipe``'s data; write ``out_dir`` like a
    factorization run (``parts/`` with every task, ``report.json``) and return the report.

    The gate before anything is written as complete: the assembled graph of all tasks must agree with the
    torch task parts on the new tasks (export tolerance) and with the base set's own assembly on the old ones.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "recipe.json", recipe.to_json())
    checkpoint = out / "checkpoint.pt"
    if not resume:
        checkpoint.unlink(missing_ok=True)
    base = load_parts(base_parts, cache=False)
    split = load_split(recipe.data)
    run = extend_tasks(
        parts=base,
        teacher=teacher,
        train=split.train,
        tasks=tasks,
        train_config=recipe.train,
        tsn=recipe.factor.tsn,
        callbacks=callbacks,
        checkpoint=checkpoint,
    )
    parts_dir = out / "parts"
    manifest = _write_parts(base, run, teacher, split.test.images(slice(0, 8)), parts_dir)
    parts = load_parts(parts_dir, cache=False)
    assembly = _check_extension(base, parts, run, split.test.images(slice(0, 256)))
    z_test = torch.from_numpy(ckn_features(base, split.test))
    t_acc = teacher_accuracy(teacher, split.test, run.tasks)
    f_acc = _task_accuracy(run, split.test, z_test)
    report: dict[str, Any] = {
        "recipe": recipe.name,
        "extended_from": {"manifest_sha256": base.manifest_sha256, "tasks": base.task_names},
        "ckn_sha256": manifest["ckn"]["sha256"],
        "objective": "IMB without InfoMax (frozen CKN): lambda_kd*KD + CE + task_weight*CE(aux) + beta*KL",
        "tasks": {
            t.name: {
                "output": t.output,
                "classes": t.class_index(teacher.output_sizes),
                "teacher_accuracy": t_acc[t.name],
                "factor_accuracy": f_acc[t.name],
                "gap_points": 100 * (t_acc[t.name] - f_acc[t.name]),
            }
            for t in run.tasks
        },
        "assembly": assembly,
        "train_samples": len(split.train),
        "test_samples": len(split.test),
        "train_seconds": run.wall_seconds,
        "history": run.history,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(out / "report.json", report)
    return report


def remove_tasks(base_parts: str | Path, out_dir: str | Path, *, drop: Sequence[str]) -> dict[str, Any]:
    """A parts directory holding every task of ``base_parts`` but ``drop``, the files byte-for-byte the same."""
    base = load_parts(base_parts, cache=False)
    unknown = sorted(set(drop) - set(base.task_names))
    if unknown:
        raise ConfigError(f"the factor set has no task(s) {unknown}; its tasks: {base.task_names}")
    keep = [n for n in base.task_names if n not in drop]
    if not keep:
        raise ConfigError("removing every task would leave an empty factor set; keep at least one")
    manifest: dict[str, Any] = json.loads(json.dumps(base.manifest))
    manifest["tasks"] = {n: manifest["tasks"][n] for n in keep}
    _copy_parts(base, Path(out_dir), manifest)
    return manifest


def _copy_parts(base: FactorParts, out: Path, manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for entry in [manifest["ckn"], *manifest["tasks"].values()]:
        shutil.copyfile(base.directory / entry["file"], out / entry["file"])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: it vouches for the files


def _write_parts(base: FactorParts, run: ExtendRun, teacher: Teacher, sample: np.ndarray, out: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(json.dumps(base.manifest))
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    x = torch.from_numpy(sample)
    z_c = torch.from_numpy(ckn_features(base, sample))
    for t in run.tasks:
        file = f"task_{t.name}.onnx"
        export_module(run.parts[t.name], (x, z_c), out / file, input_names=["x", "z_c"], output_names=["logits"])
        classes = t.class_index(teacher.output_sizes)
        names = teacher.class_names.get(t.output) or [str(i) for i in range(teacher.output_sizes[t.output])]
        manifest["tasks"][t.name] = {
            "file": file,
            "sha256": _sha256(out / file),
            "output": t.output,
            "classes": classes,
            "class_names": [str(names[c]) for c in classes],
            "num_classes": len(classes),
        }
    for entry in [base.manifest["ckn"], *base.manifest["tasks"].values()]:
        shutil.copyfile(base.directory / entry["file"], out / entry["file"])
    manifest["format"] = FORMAT
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: it vouches for the files
    return manifest


def _check_extension(base: FactorParts, parts: FactorParts, run: ExtendRun, x: np.ndarray) -> dict[str, Any]:
    """Assemble every task; new tasks against torch (export tolerance), old ones against the base set's graph."""
    names = parts.task_names
    outputs = create_session(assemble(parts, names)).run([f"logits_{n}" for n in names], {"x": x})
    got = dict(zip(names, outputs, strict=True))
    old = base.task_names
    before = create_session(assemble(base, old)).run([f"logits_{n}" for n in old], {"x": x})
    z_c = torch.from_numpy(ckn_features(base, x))
    worst, bitwise = 0.0, True
    for name, want in zip(old, before, strict=True):
        diff, scale = drift(want, got[name])
        bitwise = bitwise and bool(np.array_equal(want, got[name]))
        if not diff <= EXPORT_ATOL * scale:
            raise ExportMismatchError(f"assembly drift: old task {name!r} changed by {diff:.3g}; not registered")
        worst = max(worst, diff)
    with torch.no_grad():
        for name, part in run.parts.items():
            want = part(torch.from_numpy(x), z_c).numpy()
            diff, scale = drift(want, got[name])
            if not diff <= EXPORT_ATOL * scale:  # also catches NaN
                raise ExportMismatchError(
                    f"assembly drift: the assembled graph's logits_{name} differ from the torch task network by "
                    f"{diff:.3g}, beyond {EXPORT_ATOL:g} x max(1, {scale:.3g}); the factor set is not registered"
                )
            worst = max(worst, diff)
    return {"tasks": names, "max_abs_diff": worst, "samples_compared": len(x), "old_tasks_bitwise": bitwise}


def _task_accuracy(run: ExtendRun, data: ArrayDataset, z_c: torch.Tensor) -> dict[str, float]:
    labels = {t.name: task_labels(t, data.labels[t.label_column]) for t in run.tasks}
    rows = {"start": 0}

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = rows["start"]
        rows["start"] = a + len(x)
        return {n: p(x, z_c[a : a + len(x)]) for n, p in run.parts.items()}

    return labelled_accuracy(predict, data, labels)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
