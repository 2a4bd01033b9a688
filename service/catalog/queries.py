"""Catalog reads and writes: plain keyword-only functions over a SQLAlchemy session, one verb each.

The caller owns the transaction (routes commit through ``SessionDep``; jobs use ``session_scope``), so several
calls compose into one atomic change. Every catalog write of the service is a function of ``service.catalog``:
job state transitions that need leases live in ``service.catalog.leases``, a run's checkpoint in
``service.catalog.checkpoints``, new factor-set versions in ``service.catalog.versions`` (``service.jobs.register``
stores and verifies the parts, then calls it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.catalog.artifacts import StoredFile
from service.catalog.db import savepoint, utcnow
from service.catalog.leases import lock_job
from service.catalog.models import (
    Artifact,
    Assembly,
    Base,
    Dataset,
    FactorSet,
    FactorSetAlias,
    Job,
    JobStatus,
    Teacher,
)
from service.errors import ConflictError, NotFoundError
from service.schemas import DatasetInfo, TeacherInfo

__all__ = [
    "BUILTIN_DATASETS",
    "create_dataset",
    "create_job",
    "create_teacher",
    "delete_job",
    "ensure_builtin_dataset",
    "factor_set_versions",
    "get_artifact",
    "get_dataset",
    "get_factor_set",
    "get_job",
    "get_teacher",
    "list_datasets",
    "list_factor_sets",
    "list_jobs",
    "list_teachers",
    "record_artifact",
    "record_enqueued",
    "request_cancel",
    "resolve_factor_set",
    "teacher_name_taken",
]

_Row = TypeVar("_Row", bound=Base)

# The built-in generators: input shape and label columns, so jobs are validated without generating data.
BUILTIN_DATASETS: dict[str, dict[str, Any]] = {
    "dsprites": {"input_shape": [1, 64, 64], "num_samples": 737_280},
    "digits": {"input_shape": [1, 8, 8], "num_samples": 1_797},
    "breast_cancer": {"input_shape": [30], "num_samples": 569},  # vectors: the tabular recipe's data
}


def record_artifact(*, session: Session, stored: StoredFile, media_type: str) -> Artifact:
    """The artifact row for a stored file, created if this content is new (content-addressed: one row per hash)."""
    found = session.scalar(select(Artifact).where(Artifact.sha256 == stored.sha256))
    if found is not None:
        return found
    row = Artifact(sha256=stored.sha256, size_bytes=stored.size, media_type=media_type, path=stored.path)
    try:
        with savepoint(session):  # another process may record the same content at the same moment
            session.add(row)
    except IntegrityError:
        found = session.scalar(select(Artifact).where(Artifact.sha256 == stored.sha256))
        assert found is not None
        return found
    return row


def get_artifact(*, session: Session, sha256: str) -> Artifact:
    row = session.scalar(select(Artifact).where(Artifact.sha256 == sha256))
    if row is None:
        raise NotFoundError("artifact", sha256)
    return row


def create_teacher(
    *, session: Session, name: str, filename: str, description: str, info: TeacherInfo, artifact: Artifact
) -> Teacher:
    """Insert a validated teacher; a duplicate name is a :class:`ConflictError`."""
    _check_unique_name(session, Teacher, name, "teacher")
    row = Teacher(
        name=name,
        filename=filename,
        description=description,
        format=info.format,
        input_shape=info.input_shape,
        outputs=info.outputs,
        output_sizes=info.output_sizes,
        features=info.features,
        feature_dims=info.feature_dims,
        class_names=info.class_names,
        tasks=info.tasks,
        artifact_id=artifact.id,
        artifact=artifact,
    )
    return _insert_named(session, row, "teacher")


def teacher_name_taken(*, session: Session, name: str) -> bool:
    return session.scalar(select(Teacher.id).where(Teacher.name == name)) is not None


def get_teacher(*, session: Session, teacher_id: uuid.UUID) -> Teacher:
    return _get(session, Teacher, teacher_id, "teacher")


def list_teachers(*, session: Session, offset: int, limit: int) -> tuple[Sequence[Teacher], int]:
    return _page(session, select(Teacher), Teacher, offset, limit)


def ensure_builtin_dataset(*, session: Session, name: str, classes: dict[str, list[str]]) -> Dataset:
    """The catalog row of a built-in dataset (created on first use)."""
    row = session.scalar(select(Dataset).where(Dataset.name == name, Dataset.source == name))
    if row is not None:
        return row
    info = BUILTIN_DATASETS[name]
    row = Dataset(
        name=name,
        source=name,
        input_shape=info["input_shape"],
        classes=classes,
        num_samples=info["num_samples"],
        description=f"built-in {name} generator",
    )
    try:
        with savepoint(session):
            session.add(row)
    except IntegrityError:
        found = session.scalar(select(Dataset).where(Dataset.name == name))
        if found is None or found.source != name:
            raise ConflictError(f"a dataset named {name!r} exists but is not the built-in one") from None
        return found
    return row


def create_dataset(*, session: Session, name: str, description: str, info: DatasetInfo, artifact: Artifact) -> Dataset:
    """Insert a validated uploaded dataset; a duplicate or built-in name is a :class:`ConflictError`."""
    if name in BUILTIN_DATASETS:
        raise ConflictError(f"dataset name {name!r} is reserved for the built-in dataset; choose another")
    _check_unique_name(session, Dataset, name, "dataset")
    row = Dataset(
        name=name,
        description=description,
        source="npz",
        input_shape=info.input_shape,
        classes=info.classes,
        num_samples=info.num_samples,
        artifact_id=artifact.id,
        artifact=artifact,
    )
    return _insert_named(session, row, "dataset")


def get_dataset(*, session: Session, dataset_id: uuid.UUID) -> Dataset:
    return _get(session, Dataset, dataset_id, "dataset")


def list_datasets(*, session: Session, offset: int, limit: int) -> tuple[Sequence[Dataset], int]:
    return _page(session, select(Dataset), Dataset, offset, limit)


def create_job(
    *,
    session: Session,
    teacher_id: uuid.UUID,
    dataset_id: uuid.UUID,
    recipe: dict[str, Any],
    factor_set_name: str,
    queue: str,
    max_attempts: int,
    epochs: int,
) -> Job:
    """Insert a queued job (the caller commits, then hands it to a runner)."""
    now = utcnow()
    row = Job(
        teacher_id=teacher_id,
        dataset_id=dataset_id,
        recipe=recipe,
        factor_set_name=factor_set_name,
        queue=queue,
        max_attempts=max_attempts,
        epochs=epochs,
        status=JobStatus.queued.value,
        stage="queued",
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def delete_job(*, session: Session, job: Job) -> None:
    """Delete a job row that never ran (its queue could not take it); the caller commits."""
    session.delete(job)
    session.flush()


def record_enqueued(*, job: Job, rq_job_id: str, at: dt.datetime | None = None) -> None:
    """Note where the queue put ``job`` (its RQ job id) and, given ``at``, when (so recovery waits before looking
    again); written with the caller's transaction."""
    job.rq_job_id = rq_job_id
    if at is not None:
        job.updated_at = at


def get_job(*, session: Session, job_id: uuid.UUID) -> Job:
    return _get(session, Job, job_id, "job")


def list_jobs(
    *, session: Session, offset: int, limit: int, status: JobStatus | None = None, name: str | None = None
) -> tuple[Sequence[Job], int]:
    """Newest first; ``status`` and ``name`` (the factor set the job registers) narrow the list."""
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status.value)
    if name is not None:
        query = query.where(Job.factor_set_name == name)
    return _page(session, query, Job, offset, limit)


def request_cancel(*, session: Session, job_id: uuid.UUID) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its run polls the row and stops within seconds).

    Cancelling a job that is already cancelled is a no-op; a succeeded or failed job is a :class:`ConflictError`.
    """
    job = lock_job(session=session, job_id=job_id)
    if job is None:
        raise NotFoundError("job", job_id)
    now = utcnow()
    if job.status == JobStatus.cancelled:
        return job
    if job.status in (JobStatus.succeeded, JobStatus.failed):
        raise ConflictError(f"job {job_id} already {job.status}; only queued or running jobs can be cancelled")
    if job.cancel_requested_at is None:
        job.cancel_requested_at = now
    if job.status == JobStatus.queued:
        job.status, job.stage, job.finished_at, job.lease = JobStatus.cancelled.value, "cancelled", now, None
    job.updated_at = now
    session.flush()
    return job


def get_factor_set(*, session: Session, factor_set_id: uuid.UUID) -> FactorSet:
    return _get(session, FactorSet, factor_set_id, "factor set")


def list_factor_sets(
    *, session: Session, offset: int, limit: int, name: str | None = None
) -> tuple[Sequence[FactorSet], int]:
    query = select(FactorSet)
    if name is not None:
        query = query.where(FactorSet.name == name)
    return _page(session, query, FactorSet, offset, limit)


def resolve_factor_set(*, session: Session, ref: str) -> FactorSet:
    """A factor set by id, by ``name`` (its latest version), by ``name:version`` or by ``name@alias``."""
    try:
        return get_factor_set(session=session, factor_set_id=uuid.UUID(ref))
    except ValueError:
        pass
    if "@" in ref:
        name, _, alias = ref.partition("@")
        pointer = session.scalar(
            select(FactorSetAlias).where(FactorSetAlias.name == name, FactorSetAlias.alias == alias)
        )
        if pointer is None:
            raise NotFoundError("alias", repr(ref))
        return pointer.factor_set
    name, sep, version = ref.rpartition(":")
    query = select(FactorSet)
    if sep and version.isdigit():
        query = query.where(FactorSet.name == name, FactorSet.version == int(version))
    else:
        query = query.where(FactorSet.name == ref).order_by(FactorSet.version.desc()).limit(1)
    row = session.scalars(query).first()
    if row is None:
        raise NotFoundError("factor set", repr(ref))
    return row


def factor_set_versions(*, session: Session, name: str) -> list[int]:
    """Every version registered under ``name``, oldest first."""
    return list(session.scalars(select(FactorSet.version).where(FactorSet.name == name).order_by(FactorSet.version)))


def find_assembly(*, session: Session, factor_set_id: uuid.UUID, tasks_key: str, combined: bool) -> Assembly | None:
    """The stored fused graph of one task subset (``tasks_key``: its task names sorted, comma-joined), if any."""
    return session.scalar(
        select(Assembly).where(
            Assembly.factor_set_id == factor_set_id, Assembly.tasks_key == tasks_key, Assembly.combined == combined
        )
    )


def record_assembly(
    *,
    session: Session,
    factor_set_id: uuid.UUID,
    tasks: Sequence[str],
    combined: bool,
    stored: StoredFile,
    media_type: str,
) -> uuid.UUID:
    """Register a fused graph (its artifact and its assembly row); another replica's row for the same subset wins."""
    artifact = record_artifact(session=session, stored=stored, media_type=media_type)
    tasks_key = ",".join(sorted(tasks))
    row = Assembly(
        factor_set_id=factor_set_id, tasks=list(tasks), tasks_key=tasks_key, combined=combined, graph_artifact=artifact
    )
    try:
        with savepoint(session):  # another replica may record the same assembly at the same moment
            session.add(row)
    except IntegrityError:
        found = find_assembly(session=session, factor_set_id=factor_set_id, tasks_key=tasks_key, combined=combined)
        assert found is not None
        return found.id
    return row.id


def _get(session: Session, model: type[_Row], key: uuid.UUID, kind: str) -> _Row:
    row = session.get(model, key)
    if row is None:
        raise NotFoundError(kind, key)
    return row


def _page(session: Session, query: Any, model: Any, offset: int, limit: int) -> tuple[Sequence[Any], int]:
    """Newest first, ``limit`` rows from ``offset``, and the total count of rows matching ``query``."""
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(model.created_at.desc(), model.id).offset(offset).limit(limit)).unique()
    return rows.all(), int(count)


def _insert_named(session: Session, row: _Row, kind: str) -> _Row:
    try:
        with savepoint(session):  # a concurrent upload under the same name loses here, cleanly
            session.add(row)
    except IntegrityError:
        raise ConflictError(
            f"a {kind} named {getattr(row, 'name', '')!r} already exists; choose another name"
        ) from None
    return row


def _check_unique_name(session: Session, model: Any, name: str, kind: str) -> None:
    if session.scalar(select(model.id).where(model.name == name)) is not None:
        raise ConflictError(f"a {kind} named {name!r} already exists; choose another name")
