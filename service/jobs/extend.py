"""Extension jobs: ``POST /v1/factor-sets/{ref}/tasks`` trains new tasks against a factor set's frozen CKN.

Submission resolves everything up front, as for a factorization job: the base factor set, the teacher (the set's
own, or another whose input matches), the data, the new tasks (which must not clash with the set's) and the
training config. The job row is an ordinary job, so progress, cancellation, checkpoints and retries work the
same; its recipe carries an ``extend`` entry naming the base set, which ``service.jobs.run`` reads to call
``kf_core.run_extension`` instead of a factorization. The result registers as the next version of the base
set's name, its CKN and old task parts the very same artifacts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.orm import Session

from kf_core import DataSpec, NetSpec, Recipe, TrainConfig, check_input_shape
from kf_core.errors import KfError
from service.catalog import queries as catalog
from service.catalog.datasets import builtin_classes
from service.catalog.models import EXTEND_KEY, Dataset, FactorSet, Job
from service.config import Settings
from service.errors import InvalidInputError
from service.jobs.runners import Runner
from service.jobs.spec import _check_fit, _data_json, _tasks
from service.jobs.submit import _referenced, queue_job
from service.schemas import FactorSetExtend

__all__ = ["EXTEND_KEY", "submit_extension"]


def submit_extension(*, session: Session, settings: Settings, runner: Runner, ref: str, body: FactorSetExtend) -> Job:
    base = catalog.resolve_factor_set(session=session, ref=ref)
    teacher = base.teacher
    if body.teacher_id is not None:
        teacher_id = body.teacher_id
        teacher = _referenced(lambda: catalog.get_teacher(session=session, teacher_id=teacher_id))
    dataset = _dataset(session, body, base)
    recipe = _recipe(base, body, teacher, dataset)
    return queue_job(
        session=session,
        settings=settings,
        runner=runner,
        teacher=teacher,
        dataset=dataset,
        recipe=recipe,
        name=base.name,
        max_attempts=body.max_attempts,
    )


def _dataset(session: Session, body: FactorSetExtend, base: FactorSet) -> Dataset:
    if body.dataset_id is not None:
        dataset_id = body.dataset_id
        return _referenced(lambda: catalog.get_dataset(session=session, dataset_id=dataset_id))
    if body.dataset is None:
        return base.dataset
    if body.dataset not in catalog.BUILTIN_DATASETS:
        raise InvalidInputError(
            f"unknown built-in dataset {body.dataset!r}; built-in: {', '.join(sorted(catalog.BUILTIN_DATASETS))} "
            "(an uploaded dataset goes in 'dataset_id')"
        )
    return catalog.ensure_builtin_dataset(session=session, name=body.dataset, classes=builtin_classes(body.dataset))


def _recipe(base: FactorSet, body: FactorSetExtend, teacher: Any, dataset: Dataset) -> dict[str, Any]:
    if not base.config or "factor" not in base.config:
        raise InvalidInputError(
            f"factor set {base.name}:{base.version} records no recipe (it was not made by a job); it cannot be extended"
        )
    try:
        recipe = Recipe.from_json(base.config)
    except KfError as e:
        raise InvalidInputError(f"factor set {base.name}:{base.version} has an unreadable recipe: {e}") from None
    check_input_shape(
        base.input_spec["shape"][1:],
        dataset.input_shape,
        what=f"factor set {base.name}:{base.version}",
        data=f"dataset {dataset.name!r}",
    )
    _check_fit(teacher, dataset)  # so the teacher's input matches the factor set's too
    ov = body.overrides
    if ov.factor and set(ov.factor) - {"tsn"}:
        raise InvalidInputError("overrides.factor may only set 'tsn' when extending: the CKN is frozen")
    same = recipe.data.source == dataset.source
    data = _data_json(recipe.data.to_json() if same else {}, dataset, ov.data, ov.samples)
    train = {**recipe.train.to_json(), **ov.train}
    train.update({k: v for k, v in (("epochs", ov.epochs), ("seed", ov.seed)) if v is not None})
    if int(train.get("processes", 1)) != 1:
        raise InvalidInputError("an extension trains in one process; drop 'processes'")
    factor = recipe.factor
    if "tsn" in ov.factor:
        factor = dataclasses.replace(factor, tsn=NetSpec.from_json(ov.factor["tsn"]))
    tasks = _tasks(body, recipe.tasks if same else (), teacher, dataset)  # type: ignore[arg-type]
    clash = sorted({t.name for t in tasks} & {f.task for f in base.factors})
    if clash:
        raise InvalidInputError(
            f"factor set {base.name}:{base.version} already has task(s) {clash}; name the new tasks differently"
        )
    doc: dict[str, Any] = dataclasses.replace(
        recipe, data=DataSpec.from_json(data), train=TrainConfig.from_json(train), factor=factor, tasks=tuple(tasks)
    ).to_json()
    doc[EXTEND_KEY] = {"factor_set_id": str(base.id), "name": base.name, "version": base.version}
    return doc
