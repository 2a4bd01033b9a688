"""A running job's training checkpoint in the catalog: one artifact row, pointed at by the job row.

A run stores each new checkpoint file first, then :func:`replace_checkpoint` points the job at it (fenced by the
run's lease) and deletes the row of the one it replaces; :func:`drop_checkpoint` lets go of it once the job can never
be resumed (succeeded, cancelled). Both return the sha256 of a file nothing references any more: the caller deletes
it after its transaction commits, never before.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.catalog.artifacts import StoredFile
from service.catalog.leases import Lease, touch_run
from service.catalog.models import Artifact, Job
from service.catalog.queries import record_artifact

__all__ = ["CHECKPOINT", "drop_checkpoint", "is_recorded", "replace_checkpoint"]

CHECKPOINT = "application/x-kf-checkpoint"


def replace_checkpoint(*, session: Session, lease: Lease, stored: StoredFile, step: int) -> str | None:
    """Record ``stored`` as the job's checkpoint at global step ``step`` (a heartbeat of ``lease``; raises
    :class:`~service.errors.LeaseLostError` if the run lost the job) and delete the row of the checkpoint it
    replaces. Returns that checkpoint's sha256, whose file the caller deletes after the commit."""
    job = session.get(Job, lease.job_id, populate_existing=True)  # never a stale copy of the pointer
    previous = job.checkpoint_artifact_id if job is not None else None
    artifact = record_artifact(session=session, stored=stored, media_type=CHECKPOINT)
    session.flush()
    touch_run(session=session, lease=lease, checkpoint_artifact_id=artifact.id, checkpoint_step=step)
    old = session.get(Artifact, previous) if previous not in (None, artifact.id) else None
    if old is None:
        return None
    session.delete(old)
    return old.sha256


def drop_checkpoint(*, session: Session, job_id: uuid.UUID) -> str | None:
    """Unlink the job's checkpoint and delete its row (a succeeded or cancelled job is never resumed). Returns the
    sha256 of its file, which the caller deletes after the commit; ``None`` when the job had none."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.checkpoint_artifact_id is None:
        return None
    artifact = session.get(Artifact, job.checkpoint_artifact_id)
    job.checkpoint_artifact_id = None
    session.flush()  # the job lets go of the row before the row goes
    if artifact is None:
        return None
    session.delete(artifact)
    return artifact.sha256


def is_recorded(*, session: Session, sha256: str) -> bool:
    """Whether any artifact row holds this content."""
    return session.scalar(select(Artifact.id).where(Artifact.sha256 == sha256)) is not None
