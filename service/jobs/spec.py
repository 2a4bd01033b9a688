"""Turn a ``JobCreate`` into the exact kf_core recipe a job will run, checking everything checkable up front.

Submission is where a user can still fix a mistake cheaply, so this resolves and validates the recipe, the
overrides, the tasks, the architectures and the data/teacher fit before a job row exists: a bad request is a
422 naming the field, never a job that fails minutes later. Data always comes from the catalog's dataset row:
a request can tune the split but never point a job at a server path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kf_core import (
    DataSpec,
    FactorConfig,
    Recipe,
    TaskSpec,
    TrainConfig,
    check_input_shape,
    get_recipe,
    list_recipes,
    select_tasks,
    validate_tasks,
)
from kf_core.errors import KfError, UnknownRecipeError
from service.catalog.models import Dataset, Teacher
from service.errors import InvalidInputError
from service.schemas import JobCreate

__all__ = ["ARTIFACT_PREFIX", "default_recipe_name", "resolve_recipe"]

ARTIFACT_PREFIX = "artifact:"  # data.path of uploaded datasets: the worker swaps in a verified local copy
_DATA_TUNABLE = ("samples", "seed", "test_fraction", "split_seed", "labels")


def resolve_recipe(*, job_in: JobCreate, teacher: Teacher, dataset: Dataset) -> dict[str, Any]:
    """The recipe JSON (tasks included) for ``job_in``; raises a 4xx error for anything that cannot run."""
    base = _base_recipe(job_in, dataset)
    ov = job_in.overrides
    data = _data_json(base.data.to_json() if base.data.source == dataset.source else {}, dataset, ov.data, ov.samples)
    train = {**base.train.to_json(), **ov.train}
    train.update({k: v for k, v in (("epochs", ov.epochs), ("seed", ov.seed)) if v is not None})
    if job_in.processes is not None:
        train["processes"] = job_in.processes
    factor = {**base.factor.to_json(), **ov.factor}
    try:
        factor_config = FactorConfig.from_json(factor)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"overrides.factor is invalid ({e!r}); give ckn, tsn and feature_dim") from None
    recipe = Recipe(
        name=base.name,
        description=base.description,
        data=DataSpec.from_json(data),
        teacher=base.teacher,
        factor=factor_config,
        train=TrainConfig.from_json(train),
        tasks=(),
    )
    _check_fit(teacher, dataset)
    same_data = base.data.source == dataset.source  # a recipe's tasks belong to the data it was written for
    tasks = _tasks(job_in, base.tasks if same_data else (), teacher, dataset)
    _check_nets(factor_config, dataset)
    doc: dict[str, Any] = dataclasses.replace(recipe, tasks=tuple(tasks)).to_json()
    return doc


def _base_recipe(job_in: JobCreate, dataset: Dataset) -> Any:
    if job_in.recipe is None:
        if dataset.source in list_recipes():
            return get_recipe(dataset.source)
        return get_recipe(default_recipe_name([int(v) for v in dataset.input_shape]))
    if isinstance(job_in.recipe, str):
        if job_in.recipe not in list_recipes():  # get_recipe would also read files: never from a request
            raise UnknownRecipeError("recipe", job_in.recipe, list_recipes())
        return get_recipe(job_in.recipe)
    doc = dict(job_in.recipe)
    if "factor" not in doc:  # the architectures are the one thing a recipe object must say; never guess them
        raise InvalidInputError(
            "recipe has no 'factor': give the factor networks, e.g. "
            '{"factor": {"ckn": {"name": "mlp"}, "tsn": {"name": "mlp"}, "feature_dim": 64}}, '
            f"or name a built-in recipe ({', '.join(list_recipes())})"
        )
    # Jobs replace data with the dataset's and never fit a teacher, so these two only keep the recipe well formed.
    placeholder = get_recipe("digits").to_json()
    doc.setdefault("name", "custom")
    doc.setdefault("data", placeholder["data"])
    doc.setdefault("teacher", placeholder["teacher"])
    return Recipe.from_json(doc)


def default_recipe_name(sample_shape: list[int]) -> str:
    """The built-in recipe a job on uploaded data runs when it names none, chosen from one sample's shape.

    Vectors ``(D,)`` (tabular features, embeddings) get ``tabular`` (MLP CKN and TSNs); images ``(C, H, W)`` of
    at least 64 x 64 get ``dsprites`` (convolutional CKN and TSNs); anything else, small images included, gets
    ``digits`` (MLPs over the flattened sample). Only the architectures and training settings come from the
    recipe: the data, and the tasks (the teacher's outputs), always come from the job.
    """
    if len(sample_shape) == 1:
        return "tabular"
    if len(sample_shape) == 3 and min(sample_shape[1:]) >= 64:
        return "dsprites"
    return "digits"


def _data_json(
    base: dict[str, Any], dataset: Dataset, overrides: dict[str, Any], samples: int | None
) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(_DATA_TUNABLE))
    if unknown:
        raise InvalidInputError(
            f"overrides.data cannot set {unknown}: the data comes from the dataset; tunable: {list(_DATA_TUNABLE)}"
        )
    data: dict[str, Any] = {"source": dataset.source}
    data.update({k: base[k] for k in _DATA_TUNABLE if base.get(k) is not None})
    data.update(overrides)
    if samples is not None:
        data["samples"] = samples
    if dataset.source == "npz":
        assert dataset.artifact is not None
        data["path"] = ARTIFACT_PREFIX + dataset.artifact.sha256
    elif "labels" in data:
        raise InvalidInputError("overrides.data.labels applies to uploaded datasets only")
    if data.get("samples") is not None and data["samples"] > dataset.num_samples:
        raise InvalidInputError(
            f"samples={data['samples']} but dataset {dataset.name!r} has only {dataset.num_samples}; lower it"
        )
    return data


def _tasks(job_in: JobCreate, recipe_tasks: tuple[Any, ...], teacher: Teacher, dataset: Dataset) -> list[Any]:
    # The teacher's own task list wins; then the recipe's; then one task per teacher output.
    known = [TaskSpec.from_json(t) for t in teacher.tasks] or list(recipe_tasks)
    known = known or [TaskSpec(name=o, output=o) for o in teacher.output_sizes]
    if job_in.tasks is None:
        tasks = known
    else:
        tasks = []
        for item in job_in.tasks:
            if isinstance(item, str):
                tasks.extend(select_tasks(known, [item]))
            else:
                tasks.append(TaskSpec.from_json(item.model_dump()))
    tasks = validate_tasks(tasks, teacher.output_sizes)
    columns = dataset.classes
    for t in tasks:
        column = t.label_column
        if column not in columns:
            raise InvalidInputError(
                f"task {t.name!r} reads the label column {column!r}, which dataset {dataset.name!r} does not have; "
                f"its label columns: {', '.join(sorted(columns))}"
            )
        n_data, n_out = len(columns[column]), teacher.output_sizes[t.output]
        if n_data > n_out:
            raise InvalidInputError(
                f"task {t.name!r}: dataset column {column!r} has {n_data} classes but teacher output {t.output!r} "
                f"has {n_out}; map the task to an output with as many classes"
            )
    return tasks


def _check_fit(teacher: Teacher, dataset: Dataset) -> None:
    check_input_shape(
        teacher.input_shape, dataset.input_shape, what=f"teacher {teacher.name!r}", data=f"dataset {dataset.name!r}"
    )


def _check_nets(config: Any, dataset: Dataset) -> None:
    """Build the CKN and one TSN once: an unknown architecture or a bad keyword fails now, not in the worker."""
    for role, spec in (("ckn", config.ckn), ("tsn", config.tsn)):
        try:
            spec.build(input_shape=[int(v) for v in dataset.input_shape], feature_dim=config.feature_dim)
        except KfError:
            raise
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidInputError(f"factor.{role} = {spec.to_json()} cannot be built: {e}") from None
