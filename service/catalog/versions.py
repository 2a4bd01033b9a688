"""Inserting factor-set versions: the catalog writes behind a job's registration and the versions made without
training (tasks removed, a run imported).

The version number is the name's latest plus one. Two registrations under one name at the same moment both read
the same latest version; the unique ``(name, version)`` constraint lets only one insert through, and the other's
:class:`~sqlalchemy.exc.IntegrityError` reaches its caller (a job registration retries; a derived version asks the
client to try again). The insert runs inside a savepoint, so the loser's transaction is still usable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.catalog.db import savepoint, utcnow
from service.catalog.models import Artifact, Factor, FactorSet, Job, JobStatus

__all__ = ["FactorEntry", "create_finished_job", "insert_factor_set"]


@dataclass(frozen=True)
class FactorEntry:
    """One task part of a new version, as its manifest and report describe it."""

    task: str  # the task's name
    output: str  # the teacher output the task reads
    classes: list[Any]  # the teacher's class indices the task's head predicts
    class_names: list[Any]  # their names, in the same order
    artifact: Artifact  # the stored ONNX part
    metrics: dict[str, Any]  # the task's metrics from the run's report


def insert_factor_set(
    *,
    session: Session,
    job: Job,
    config: dict[str, Any],
    metrics: dict[str, Any],
    input_spec: dict[str, Any],
    ckn: Artifact,
    manifest: Artifact,
    report: Artifact,
    factors: Sequence[FactorEntry],
) -> FactorSet:
    """Insert the next version of ``job.factor_set_name`` with its factors (in a savepoint; the caller commits).

    Raises :class:`~sqlalchemy.exc.IntegrityError` if another registration took the version meanwhile, or if a
    referenced artifact row went (the collector); the session's transaction stays usable.
    """
    latest = session.scalar(select(func.max(FactorSet.version)).where(FactorSet.name == job.factor_set_name))
    row = FactorSet(
        name=job.factor_set_name,
        version=(latest or 0) + 1,
        teacher_id=job.teacher_id,
        dataset_id=job.dataset_id,
        job_id=job.id,
        config=config,
        metrics=metrics,
        input_spec=input_spec,
        ckn_artifact=ckn,
        manifest_artifact=manifest,
        report_artifact=report,
        factors=[
            Factor(
                task=f.task,
                position=i,
                output=f.output,
                classes=list(f.classes),
                class_names=list(f.class_names),
                artifact=f.artifact,
                metrics=f.metrics,
            )
            for i, f in enumerate(factors)
        ],
    )
    with savepoint(session):
        session.add(row)
    return row


def create_finished_job(
    *,
    session: Session,
    teacher_id: uuid.UUID,
    dataset_id: uuid.UUID,
    recipe: dict[str, Any],
    factor_set_name: str,
    stage: str,
) -> Job:
    """A job row that is born succeeded: the lineage of a version made without training (``stage`` says how:
    ``removed-tasks`` or ``imported``); nothing ever runs it."""
    now = utcnow()
    job = Job(
        teacher_id=teacher_id,
        dataset_id=dataset_id,
        recipe=recipe,
        factor_set_name=factor_set_name,
        queue="none",
        max_attempts=1,
        status=JobStatus.succeeded.value,
        stage=stage,
        progress=1.0,
        started_at=now,
        finished_at=now,
    )
    session.add(job)
    session.flush()
    return job
