"""Job submission and cancellation: what ``POST /v1/jobs`` and ``POST /v1/jobs/{id}/cancel`` do.

A job is validated completely before it exists (``service.jobs.spec``), committed, then handed to the runner. If the
queue cannot take it (Redis down), the row is deleted again and the caller gets a 503: no job is left queued
that nothing will ever run. Execution lives in ``service.jobs.run``; runners in ``service.jobs.runners``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.datasets import builtin_classes
from service.catalog.models import Dataset, Job, Teacher
from service.config import Settings
from service.errors import InvalidInputError, NotFoundError, QueueUnavailableError
from service.jobs.runners import Runner
from service.jobs.spec import resolve_recipe
from service.schemas import JobCreate

__all__ = ["cancel_job", "queue_job", "submit_job"]

GPU_QUEUE = "gpu"
_T = TypeVar("_T", Teacher, Dataset)


def submit_job(*, session: Session, settings: Settings, runner: Runner, job_in: JobCreate) -> Job:
    teacher = _referenced(lambda: catalog.get_teacher(session=session, teacher_id=job_in.teacher_id))
    dataset = _dataset(session, job_in)
    recipe = resolve_recipe(job_in=job_in, teacher=teacher, dataset=dataset)
    return queue_job(
        session=session,
        settings=settings,
        runner=runner,
        teacher=teacher,
        dataset=dataset,
        recipe=recipe,
        name=job_in.name or f"{teacher.name}-{dataset.name}",
        max_attempts=job_in.max_attempts,
    )


def queue_job(
    *,
    session: Session,
    settings: Settings,
    runner: Runner,
    teacher: Teacher,
    dataset: Dataset,
    recipe: dict[str, Any],
    name: str,
    max_attempts: int | None,
) -> Job:
    """Insert the job for a checked recipe and hand it to the runner; a queue that cannot take it (503) leaves no
    row behind."""
    job = catalog.create_job(
        session=session,
        teacher_id=teacher.id,
        dataset_id=dataset.id,
        recipe=recipe,
        factor_set_name=name,
        queue=GPU_QUEUE if recipe["train"].get("device", "auto") == "cuda" else settings.queue,
        max_attempts=max_attempts or settings.max_attempts,
        epochs=int(recipe["train"]["epochs"]),
    )
    session.commit()
    try:
        runner.enqueue(job)
    except QueueUnavailableError:
        catalog.delete_job(session=session, job=job)
        session.commit()
        raise
    session.commit()  # the runner may have recorded where the job went (rq_job_id)
    return job


def cancel_job(*, session: Session, job_id: uuid.UUID) -> Job:
    job = catalog.request_cancel(session=session, job_id=job_id)
    session.commit()
    return job


def _dataset(session: Session, job_in: JobCreate) -> Dataset:
    if job_in.dataset_id is not None:
        dataset_id = job_in.dataset_id
        return _referenced(lambda: catalog.get_dataset(session=session, dataset_id=dataset_id))
    assert job_in.dataset is not None
    if job_in.dataset not in catalog.BUILTIN_DATASETS:
        raise InvalidInputError(
            f"unknown built-in dataset {job_in.dataset!r}; built-in: {', '.join(sorted(catalog.BUILTIN_DATASETS))} "
            "(an uploaded dataset goes in 'dataset_id')"
        )
    return catalog.ensure_builtin_dataset(session=session, name=job_in.dataset, classes=builtin_classes(job_in.dataset))


def _referenced(get: Callable[[], _T]) -> _T:
    # A missing id in the request body is a mistake in the request (422), not a missing URL (404).
    try:
        return get()
    except NotFoundError as e:
        raise InvalidInputError(f"{e.kind} {e.key} does not exist; create it first or fix the id") from None
