"""End-to-end runs that the CLI and the service's jobs share: fit a teacher, factorize it, export, assemble,
evaluate and report. Each writes a self-contained run directory:

    teacher/   teacher.json, teacher.safetensors, teacher.onnx, report.json, curves.png
    factor/    recipe.json, checkpoint.pt, parts/ (manifest.json, ckn.onnx, task_<name>.onnx),
               report.json, accuracy.png, curves.png
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kf_core.accuracy import factor_accuracy, teacher_accuracy
from kf_core.assemble import assemble, load_parts
from kf_core.data.spec import load_split
from kf_core.distributed import SINGLE, Dist
from kf_core.errors import ExportMismatchError
from kf_core.export import EXPORT_ATOL, drift, export_factor_set
from kf_core.loop import Callback
from kf_core.ort import create_session
from kf_core.recipes import Recipe
from kf_core.report import plot_accuracy, plot_curves, write_json
from kf_core.tasks import TaskSpec, select_tasks, task_labels, validate_tasks
from kf_core.teacher import Teacher, save_teacher
from kf_core.train import factorize, fit_teacher

__all__ = ["check_assembly", "recipe_tasks", "run_factorization", "run_teacher_fit"]


def run_teacher_fit(recipe: Recipe, out_dir: str | Path, *, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Fit the recipe's demo teacher on its data and save it (weights, spec, ONNX) with a report."""
    started = time.perf_counter()
    out = Path(out_dir)
    split = load_split(recipe.data)
    teacher = fit_teacher(
        train=split.train,
        backbone=recipe.teacher.backbone,
        feature_dim=recipe.teacher.feature_dim,
        train_config=recipe.teacher.train,
        callbacks=callbacks,
        checkpoint=out / "checkpoint.pt",
    )
    teacher.spec["recipe"] = recipe.to_json()
    save_teacher(teacher, out)
    acc = teacher_accuracy(teacher, split.test, [TaskSpec(name=o, output=o) for o in teacher.output_sizes])
    history = teacher.spec.get("history", [])
    plot_curves(out / "curves.png", history, title=f"teacher training ({recipe.name})")
    report = {
        "recipe": recipe.name,
        "outputs": {o: {"test_accuracy": a, "classes": teacher.output_sizes[o]} for o, a in acc.items()},
        "train_samples": len(split.train),
        "test_samples": len(split.test),
        "history": history,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(out / "report.json", report)
    (out / "checkpoint.pt").unlink(missing_ok=True)  # the saved weights supersede it
    return report


def recipe_tasks(recipe: Recipe, teacher: Teacher, names: Sequence[str] | None = None) -> list[TaskSpec]:
    """The recipe's tasks (or one per teacher output), narrowed to ``names`` and checked against the teacher."""
    tasks = list(recipe.tasks) or [TaskSpec(name=o, output=o) for o in teacher.output_sizes]
    return validate_tasks(select_tasks(tasks, names), teacher.output_sizes)


def run_factorization(
    recipe: Recipe,
    teacher: Teacher,
    out_dir: str | Path,
    *,
    task_names: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = True,
    teacher_source: str | None = None,
    dist: Dist = SINGLE,
) -> dict[str, Any]:
    """Factorize ``teacher`` with ``recipe``, export the parts, check the assembly and write the report.

    ``teacher_source`` (where the teacher was loaded from) is recorded so ``kf evaluate RUN_DIR`` can find it.
    With ``dist`` spanning several processes every process calls this alike; rank 0 alone writes ``out_dir``
    (the others train and then return ``{"rank": r}``), so the processes need no shared file system.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    tasks = recipe_tasks(recipe, teacher, task_names)
    split = load_split(recipe.data)
    teacher.check_input(split.train.input_shape)
    checkpoint = out / "checkpoint.pt"
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.json", recipe.to_json())
        if not resume:
            checkpoint.unlink(missing_ok=True)
    run = factorize(
        teacher=teacher,
        train=split.train,
        tasks=tasks,
        factor_config=recipe.factor,
        train_config=recipe.train,
        callbacks=callbacks,
        checkpoint=checkpoint,
        eval_data=split.test if recipe.train.eval_every else None,
        dist=dist,
    )
    if not dist.is_main:
        return {"rank": dist.rank}
    t_acc = teacher_accuracy(teacher, split.test, tasks)
    f_acc = factor_accuracy(run.model, split.test, tasks)

    class_names = {t.name: _class_names(teacher, t) for t in tasks}
    sample = torch.from_numpy(split.test.images(slice(0, 8)))
    export_factor_set(
        run.model, out / "parts", sample=sample, class_names=class_names, output_sizes=teacher.output_sizes
    )
    assembly = check_assembly(out / "parts", run.model, split.test.images(slice(0, 256)), tasks)
    combined = _combined_accuracy(out / "parts", tasks, split.test.images(), split.test.labels, teacher)
    if combined is not None:
        assembly["combined"] = combined

    report: dict[str, Any] = {
        "recipe": recipe.name,
        "teacher": {"path": teacher_source} if teacher_source else None,
        "tasks": {
            t.name: {
                "output": t.output,
                "classes": t.class_index(teacher.output_sizes),
                "teacher_accuracy": t_acc[t.name],
                "factor_accuracy": f_acc[t.name],
                "gap_points": 100 * (t_acc[t.name] - f_acc[t.name]),
            }
            for t in tasks
        },
        "assembly": assembly,
        "train_samples": len(split.train),
        "test_samples": len(split.test),
        "train_seconds": run.wall_seconds,
        "processes": dist.world_size,
        "history": run.history,
        "wall_seconds": time.perf_counter() - started,
    }
    plot_accuracy(
        out / "accuracy.png",
        {"teacher": t_acc, "factor network": f_acc},
        title=f"teacher vs factor networks ({recipe.name}, test split)",
    )
    plot_curves(out / "curves.png", run.history, title=f"factorization ({recipe.name})")
    write_json(out / "report.json", report)
    return report


def _class_names(teacher: Teacher, task: TaskSpec) -> list[str]:
    names = teacher.class_names.get(task.output) or [str(i) for i in range(teacher.output_sizes[task.output])]
    return [names[i] for i in task.class_index(teacher.output_sizes)]


def check_assembly(parts_dir: Path, model: Any, x: np.ndarray, tasks: Sequence[TaskSpec]) -> dict[str, Any]:
    """Assemble all tasks and compare the ONNX Runtime outputs with the torch factor networks.

    The gate of every run: an assembled graph that drifts from torch beyond the export tolerance raises
    :class:`ExportMismatchError`, so no caller (the service's jobs included) can register a factor set whose
    served predictions would differ from the networks it measured.
    """
    names = [t.name for t in tasks]
    graph = assemble(load_parts(parts_dir), names)
    session = create_session(graph)
    got = session.run([f"logits_{n}" for n in names], {"x": x})
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    worst = 0.0
    for name, have in zip(names, got, strict=True):
        diff, scale = drift(want[name].numpy(), have)
        if not diff <= EXPORT_ATOL * scale:  # also catches NaN
            raise ExportMismatchError(
                f"assembly drift: the assembled graph's logits_{name} differ from the torch factor network by "
                f"{diff:.3g} (max abs difference over {len(x)} test samples), beyond the export tolerance "
                f"{EXPORT_ATOL:g} x max(1, largest |logit| = {scale:.3g}); the factor set is not registered"
            )
        worst = max(worst, diff)
    return {"tasks": names, "max_abs_diff": worst, "samples_compared": len(x)}


def _combined_accuracy(
    parts_dir: Path, tasks: Sequence[TaskSpec], x: np.ndarray, labels: dict[str, np.ndarray], teacher: Teacher
) -> dict[str, Any] | None:
    """For class-subset tasks of one output covering several groups: the combined classifier's accuracy."""
    outputs = {t.output for t in tasks}
    if len(tasks) < 2 or len(outputs) != 1 or not all(t.is_class_subset for t in tasks):
        return None
    output = outputs.pop()
    union = [c for t in tasks for c in t.class_index(teacher.output_sizes)]
    graph = assemble(load_parts(parts_dir), [t.name for t in tasks], combined=True)
    (logits,) = create_session(graph).run(["logits_combined"], {"x": x})
    y = task_labels(TaskSpec(name="union", output=output, classes=tuple(union)), labels[tasks[0].label_column])
    keep = y >= 0
    acc = float((logits.argmax(1)[keep] == y[keep]).mean())
    t_logits = teacher(torch.from_numpy(x)).logits[output].cpu().numpy()[:, union]
    t_acc = float((t_logits.argmax(1)[keep] == y[keep]).mean())
    return {"classes": union, "factor_accuracy": acc, "teacher_accuracy": t_acc, "gap_points": 100 * (t_acc - acc)}
