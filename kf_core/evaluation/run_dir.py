"""Reading a factorization run directory back: its recipe, report, trained factor network and teacher.

A run directory is what :func:`kf_core.pipeline.run_factorization` writes: ``recipe.json``, ``report.json``,
``checkpoint.pt`` (the training loop's final checkpoint, which holds the factor network's weights) and
``parts/`` (the ONNX parts, which serve but do not expose the TSN means an evaluation needs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kf_core.errors import CheckpointError, ConfigError
from kf_core.factor import FactorNet
from kf_core.recipes import Recipe
from kf_core.tasks import TaskSpec
from kf_core.teacher import Teacher, load_teacher

__all__ = ["load_run_model", "read_json", "resolve_teacher"]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a :class:`ConfigError` saying what is wrong with it."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: pass a run directory written by `kf factorize`") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read as JSON ({e})") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return doc


def _run_tasks(recipe: Recipe, report: Mapping[str, Any]) -> list[TaskSpec]:
    """The run's tasks, in its order: the recipe's specs narrowed to the tasks the report lists."""
    by_name = {t.name: t for t in recipe.tasks}
    rows: Mapping[str, Any] = report.get("tasks") or {}
    return [by_name.get(n) or TaskSpec(name=n, output=str(r["output"]), classes=None) for n, r in rows.items()]


def load_run_model(run_dir: str | Path, *, input_shape: tuple[int, ...]) -> tuple[FactorNet, list[TaskSpec]]:
    """The trained factor network of a run directory, from its final ``checkpoint.pt``."""
    out = Path(run_dir)
    recipe = Recipe.from_json(read_json(out / "recipe.json"))
    report = read_json(out / "report.json")
    tasks = _run_tasks(recipe, report)
    path = out / "checkpoint.pt"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: evaluation needs the trained weights; re-run `kf factorize`"
        ) from None
    except Exception as e:  # a corrupt or truncated zip raises several types
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}); re-run `kf factorize`") from e
    if int(payload.get("epoch", -1)) != recipe.train.epochs or int(payload.get("step_in_epoch", -1)) != 0:
        raise CheckpointError(
            f"{path} is at epoch {payload.get('epoch')} of {recipe.train.epochs}: finish the run with `kf factorize`"
        )
    model = FactorNet(
        input_shape=input_shape,
        tasks=tasks,
        num_classes={n: len(r["classes"]) for n, r in report["tasks"].items()},
        config=recipe.factor,
    )
    state = {k[len("model.") :]: v for k, v in payload["model"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match the run's recipe.json ({str(e)[:200]})") from e
    return model.eval(), tasks


def resolve_teacher(teacher: Teacher | str | Path | None, report: Mapping[str, Any]) -> tuple[Teacher, str]:
    """``(teacher, where it came from)``: the one given, or the one the run's report records under ``teacher``."""
    if isinstance(teacher, Teacher):
        return teacher, type(teacher).__name__
    if teacher is None:  # where the factorization recorded its teacher, if it did
        recorded = report.get("teacher")
        teacher = recorded.get("path") if isinstance(recorded, Mapping) else recorded
    if not isinstance(teacher, str | Path):
        raise ConfigError("the run does not record its teacher: pass it, e.g. `kf evaluate RUN_DIR --teacher DIR`")
    return load_teacher(teacher), str(teacher)
