"""Job runs and their leases: who owns a running job, proved by a token on the job row.

A run *claims* a queued job (one conditional UPDATE: only one claimant can win), gets a :class:`Lease`, and from
then on every write it makes is fenced by ``lease = token AND status = 'running'``. A run that loses its lease
(its worker was declared lost and the job handed to another run, or the job was cancelled) gets
:class:`LeaseLostError` on its next write and stops: a zombie can never overwrite progress or register a result.

Heartbeats use the database's clock (:func:`service.catalog.db.db_now`); :func:`reap_lost_jobs` requeues (or fails, when
attempts are used up) running jobs whose heartbeat is older than ``KF_HEARTBEAT_TIMEOUT_S``.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, lazyload

from service.catalog.db import db_now
from service.catalog.models import Job, JobStatus
from service.errors import LeaseLostError

__all__ = [
    "Lease",
    "Touch",
    "cancel_requested",
    "claim_job",
    "fail_unstarted_job",
    "finish_run",
    "lock_job",
    "reap_exited_run",
    "reap_lost_jobs",
    "release_run",
    "retry_or_fail_run",
    "touch_run",
]


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """Proof that this run owns ``job_id``; ``attempt`` is the 1-based number of the run."""

    job_id: uuid.UUID
    token: str
    attempt: int
    worker: str


@dataclass(frozen=True)
class Touch:
    """What a fenced write learned: whether a cancel was requested."""

    cancel_requested: bool


def claim_job(*, session: Session, job_id: uuid.UUID, worker: str) -> Lease | None:
    """Take a queued job for this run, or ``None`` if it is not queued (taken, cancelled, finished, unknown)."""
    token = secrets.token_hex(16)
    now = db_now(session)
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value, Job.cancel_requested_at.is_(None))
        .values(
            status=JobStatus.running.value,
            stage="starting",
            lease=token,
            worker=worker[:255],
            attempts=Job.attempts + 1,
            heartbeat_at=now,
            updated_at=now,
        )
        .returning(Job.attempts, Job.started_at)
    ).one_or_none()
    if row is None:
        return None
    if row.started_at is None:
        session.execute(update(Job).where(Job.id == job_id).values(started_at=now))
    return Lease(job_id=job_id, token=token, attempt=int(row.attempts), worker=worker)


def touch_run(
    *,
    session: Session,
    lease: Lease,
    stage: str | None = None,
    epochs: int | None = None,
    steps_total: int | None = None,
    epoch: int | None = None,
    step: int | None = None,
    progress: float | None = None,
    metrics: dict[str, float] | None = None,
    resumed_from_step: int | None = None,
    checkpoint_artifact_id: uuid.UUID | None = None,
    checkpoint_step: int | None = None,
) -> Touch:
    """Heartbeat for the run holding ``lease``, writing the progress columns given (``None``: left as they are);
    raises :class:`LeaseLostError` if the run lost the job."""
    values = _given(
        stage=stage,
        epochs=epochs,
        steps_total=steps_total,
        epoch=epoch,
        step=step,
        progress=progress,
        metrics=metrics,
        resumed_from_step=resumed_from_step,
        checkpoint_artifact_id=checkpoint_artifact_id,
        checkpoint_step=checkpoint_step,
    )
    now = db_now(session)
    row = session.execute(
        _fenced(lease).values(heartbeat_at=now, updated_at=now, **values).returning(Job.cancel_requested_at)
    ).one_or_none()
    if row is None:
        raise LeaseLostError(f"job {lease.job_id}: this run (attempt {lease.attempt}) no longer owns the job")
    return Touch(cancel_requested=row.cancel_requested_at is not None)


def cancel_requested(*, session: Session, lease: Lease) -> bool:
    """Whether a cancel was requested for the run's job (a cheap read; raises if the run lost its lease)."""
    row = session.execute(
        select(Job.cancel_requested_at).where(
            Job.id == lease.job_id, Job.lease == lease.token, Job.status == JobStatus.running.value
        )
    ).one_or_none()
    if row is None:
        raise LeaseLostError(f"job {lease.job_id}: this run (attempt {lease.attempt}) no longer owns the job")
    return row.cancel_requested_at is not None


def finish_run(
    *,
    session: Session,
    lease: Lease,
    status: JobStatus,
    stage: str,
    error: str | None = None,
    progress: float | None = None,
) -> None:
    """Move the run's job to a final status and drop the lease (fenced); ``error`` and ``progress`` are written
    when given."""
    now = db_now(session)
    extra = _given(error=error, progress=progress)
    result = session.execute(
        _fenced(lease).values(status=status.value, stage=stage, lease=None, finished_at=now, updated_at=now, **extra)
    )
    if _rowcount(result) != 1:
        raise LeaseLostError(f"job {lease.job_id}: this run (attempt {lease.attempt}) no longer owns the job")


def retry_or_fail_run(*, session: Session, lease: Lease, error: str) -> JobStatus:
    """After a failure that may pass (I/O, out of memory, a lost connection): queue the job again if it has
    attempts left, otherwise mark it failed. Returns the new status."""
    job = lock_job(session=session, job_id=lease.job_id)
    if job is None or job.lease != lease.token or job.status != JobStatus.running:
        raise LeaseLostError(f"job {lease.job_id}: this run (attempt {lease.attempt}) no longer owns the job")
    if job.cancel_requested_at is not None:
        finish_run(session=session, lease=lease, status=JobStatus.cancelled, stage="cancelled", error=error)
        return JobStatus.cancelled
    if lease.attempt < job.max_attempts:
        message = f"attempt {lease.attempt} of {job.max_attempts} failed, queued again: {error}"
        session.execute(_fenced(lease).values(_requeue_values(db_now(session), message)))
        return JobStatus.queued
    message = f"attempt {lease.attempt} of {job.max_attempts} failed, no attempts left: {error}"
    finish_run(session=session, lease=lease, status=JobStatus.failed, stage="failed", error=message)
    return JobStatus.failed


def release_run(*, session: Session, lease: Lease, reason: str) -> JobStatus:
    """Hand a job back to the queue after a graceful interruption (shutdown): the attempt does not count.
    A job whose cancel was already requested is cancelled instead. Returns the new status."""
    job = lock_job(session=session, job_id=lease.job_id)
    if job is None or job.lease != lease.token or job.status != JobStatus.running:
        raise LeaseLostError(f"job {lease.job_id}: this run (attempt {lease.attempt}) no longer owns the job")
    if job.cancel_requested_at is not None:
        finish_run(session=session, lease=lease, status=JobStatus.cancelled, stage="cancelled")
        return JobStatus.cancelled
    values = _requeue_values(db_now(session), None)
    values |= {"stage": "interrupted", "attempts": Job.attempts - 1}
    session.execute(_fenced(lease).values(values))
    log.info("job %s: attempt %d interrupted (%s); queued again", lease.job_id, lease.attempt, reason)
    return JobStatus.queued


def reap_lost_jobs(*, session: Session, timeout_s: float) -> list[uuid.UUID]:
    """Requeue (or fail / cancel) running jobs whose heartbeat is older than ``timeout_s``; returns the requeued ids."""
    cutoff = db_now(session) - dt.timedelta(seconds=timeout_s)
    query = select(Job).where(Job.status == JobStatus.running.value, Job.heartbeat_at < cutoff)
    stale = session.scalars(query.options(lazyload("*")).with_for_update(skip_locked=True)).all()
    requeued = []
    for job in stale:
        why = f"worker {job.worker} sent no heartbeat for > {timeout_s:g} s during attempt {job.attempts}"
        if _take_over(session, job, why):
            requeued.append(job.id)
    return requeued


def reap_exited_run(*, session: Session, job_id: uuid.UUID, worker: str, returncode: int) -> bool:
    """A job process that this host started has exited: if it left its job running, take the job back now
    instead of waiting for the heartbeat timeout. Returns whether the job was requeued."""
    job = lock_job(session=session, job_id=job_id)
    if job is None or job.status != JobStatus.running or job.worker != worker:
        return False
    return _take_over(session, job, f"job process {worker} exited with code {returncode} during attempt {job.attempts}")


def _take_over(session: Session, job: Job, why: str) -> bool:
    now = db_now(session)
    if job.cancel_requested_at is not None:
        values: dict[str, Any] = {"status": JobStatus.cancelled.value, "stage": "cancelled", "finished_at": now}
        values |= {"lease": None, "updated_at": now}
        requeued = False
    elif job.attempts < job.max_attempts:
        values, requeued = _requeue_values(now, f"{why}; queued again"), True
    else:
        values = {"status": JobStatus.failed.value, "stage": "failed", "finished_at": now, "lease": None}
        values |= {"updated_at": now, "error": f"{why}; no attempts left ({job.attempts} of {job.max_attempts})"}
        requeued = False
    # Fenced on the lease we saw: if the run came back to life and finished meanwhile, leave the job alone.
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.lease == job.lease, Job.status == JobStatus.running.value)
        .values(values)
    )
    return requeued and _rowcount(result) == 1


def fail_unstarted_job(*, session: Session, job_id: uuid.UUID, error: str) -> bool:
    """Fail a job that is still queued because its process keeps dying before it can claim it (a broken
    environment: retrying forever would spin). Returns whether the job was failed."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.failed.value, stage="failed", error=error)
    )
    return _rowcount(result) == 1


def lock_job(*, session: Session, job_id: uuid.UUID) -> Job | None:
    """The job row, freshly read and locked until the transaction ends (SQLite serialises writers anyway)."""
    # No eager joins (PostgreSQL refuses FOR UPDATE on outer joins); populate_existing: never trust a stale copy.
    query = select(Job).where(Job.id == job_id).options(lazyload("*")).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def _requeue_values(now: dt.datetime, error: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {"status": JobStatus.queued.value, "stage": "queued again", "lease": None}
    values |= {"worker": None, "updated_at": now}
    if error is not None:
        values["error"] = error
    return values


def _given(**values: Any) -> dict[str, Any]:
    """The columns a caller gave a value for: ``None`` means "leave the column as it is"."""
    return {k: v for k, v in values.items() if v is not None}


def _fenced(lease: Lease) -> Any:
    return update(Job).where(Job.id == lease.job_id, Job.lease == lease.token, Job.status == JobStatus.running.value)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
