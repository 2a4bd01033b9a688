"""Job leases on both databases: one claimant wins, zombies are fenced out, lost runs are recovered."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.leases import claim_job, finish_run, reap_lost_jobs, release_run, retry_or_fail_run, touch_run
from service.catalog.models import Job, JobStatus
from service.errors import ConflictError, LeaseLostError


def _age_heartbeat(session: Session, job: Job, seconds: float) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=old))
    session.commit()


def test_only_one_run_can_claim_a_job(session: Session, job: Job) -> None:
    first = claim_job(session=session, job_id=job.id, worker="a:1")
    second = claim_job(session=session, job_id=job.id, worker="b:2")
    session.commit()
    assert first is not None and first.attempt == 1
    assert second is None
    session.refresh(job)
    assert (job.status, job.worker, job.attempts) == ("running", "a:1", 1)
    assert job.started_at is not None and job.heartbeat_at is not None


def test_touch_writes_progress_and_reports_cancel(session: Session, job: Job) -> None:
    lease = claim_job(session=session, job_id=job.id, worker="a:1")
    assert lease is not None
    assert touch_run(session=session, lease=lease, step=5, progress=0.5).cancel_requested is False
    session.commit()
    catalog.request_cancel(session=session, job_id=job.id)
    session.commit()
    assert touch_run(session=session, lease=lease, step=6).cancel_requested is True
    session.refresh(job)
    assert (job.step, job.status) == (6, "running")  # running until the run itself stops


def test_lost_run_is_requeued_and_its_zombie_is_fenced_out(session: Session, job: Job) -> None:
    zombie = claim_job(session=session, job_id=job.id, worker="a:1")
    session.commit()
    assert zombie is not None
    _age_heartbeat(session, job, 60)
    assert reap_lost_jobs(session=session, timeout_s=30) == [job.id]
    session.commit()
    session.refresh(job)
    assert job.status == "queued" and "no heartbeat" in (job.error or "")
    fresh = claim_job(session=session, job_id=job.id, worker="b:2")
    session.commit()
    assert fresh is not None and fresh.attempt == 2
    with pytest.raises(LeaseLostError):
        touch_run(session=session, lease=zombie, step=99)
    with pytest.raises(LeaseLostError):
        finish_run(session=session, lease=zombie, status=JobStatus.succeeded, stage="done")
    touch_run(session=session, lease=fresh, step=1)  # the new owner is unaffected


def test_fresh_heartbeats_are_not_reaped(session: Session, job: Job) -> None:
    assert claim_job(session=session, job_id=job.id, worker="a:1") is not None
    session.commit()
    assert reap_lost_jobs(session=session, timeout_s=30) == []


def test_a_job_lost_on_its_last_attempt_fails(session: Session, job: Job) -> None:
    for attempt in (1, 2):
        assert claim_job(session=session, job_id=job.id, worker=f"w:{attempt}") is not None
        session.commit()
        _age_heartbeat(session, job, 60)
        reap_lost_jobs(session=session, timeout_s=30)
        session.commit()
    session.refresh(job)
    assert job.status == "failed"
    assert "no attempts left (2 of 2)" in (job.error or "")
    assert job.finished_at is not None


def test_retry_is_bounded_by_max_attempts(session: Session, job: Job) -> None:
    lease = claim_job(session=session, job_id=job.id, worker="w:1")
    assert lease is not None
    assert retry_or_fail_run(session=session, lease=lease, error="OSError: disk full") == JobStatus.queued
    session.commit()
    lease = claim_job(session=session, job_id=job.id, worker="w:2")
    assert lease is not None
    assert retry_or_fail_run(session=session, lease=lease, error="OSError: disk full") == JobStatus.failed
    session.commit()
    session.refresh(job)
    assert job.status == "failed" and job.error == "attempt 2 of 2 failed, no attempts left: OSError: disk full"


def test_graceful_release_does_not_use_up_an_attempt(session: Session, job: Job) -> None:
    lease = claim_job(session=session, job_id=job.id, worker="w:1")
    assert lease is not None
    release_run(session=session, lease=lease, reason="shutdown")
    session.commit()
    session.refresh(job)
    assert (job.status, job.attempts, job.lease) == ("queued", 0, None)


def test_cancel_a_queued_job_at_once_and_refuse_finished_ones(session: Session, job: Job) -> None:
    cancelled = catalog.request_cancel(session=session, job_id=job.id)
    session.commit()
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert claim_job(session=session, job_id=job.id, worker="w:1") is None  # a late worker does nothing
    assert catalog.request_cancel(session=session, job_id=job.id).status == "cancelled"  # idempotent
    session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
    with pytest.raises(ConflictError, match="already succeeded"):
        catalog.request_cancel(session=session, job_id=job.id)
