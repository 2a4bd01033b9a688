"""Recovery of RQ jobs (both databases, real Redis): lost workers and lost queue entries are put right."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from rq.utils import import_attribute
from sqlalchemy import update

from service.catalog.db import make_engine, make_sessionmaker
from service.catalog.leases import claim_job
from service.catalog.models import Job
from service.jobs.run import run_job
from service.jobs.runners import JOB_FUNCTION, recover_rq_jobs


@pytest.fixture
def rq_settings(migrated: Any, redis_url: str) -> Iterator[Any]:
    import redis

    settings = migrated.model_copy(update={"redis_url": redis_url})
    yield settings
    conn = redis.Redis.from_url(redis_url)
    keys = list(conn.scan_iter(match=f"*{settings.queue}*")) + list(conn.scan_iter(match="rq:job:kf-*"))
    mine = [k for k in keys if settings.queue.encode() in k or b"kf-" in k]
    if mine:
        conn.delete(*mine)


def _age(session: Any, job: Job, **columns: dt.datetime) -> None:
    session.execute(update(Job).where(Job.id == job.id).values(**columns))
    session.commit()


def _rq_status(settings: Any, rq_id: str) -> str | None:
    import redis
    from rq.job import Job as RqJob

    status = RqJob.fetch(rq_id, connection=redis.Redis.from_url(settings.redis_url)).get_status()
    return None if status is None else str(status.value)


def test_queued_jobs_that_redis_lost_are_enqueued_again(session: Any, job: Job, rq_settings: Any) -> None:
    engine = make_engine(rq_settings)
    factory = make_sessionmaker(engine)
    try:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        _age(session, job, updated_at=old)  # queued for minutes, never reached Redis
        assert recover_rq_jobs(rq_settings, factory) == [job.id]
        session.refresh(job)
        first = job.rq_job_id
        assert first is not None and _rq_status(rq_settings, first) == "queued"
        _age(session, job, updated_at=old)
        assert recover_rq_jobs(rq_settings, factory) == []  # its RQ job is alive: nothing to do

        import redis
        from rq.job import Job as RqJob

        RqJob.fetch(first, connection=redis.Redis.from_url(rq_settings.redis_url)).delete()  # Redis lost it
        assert recover_rq_jobs(rq_settings, factory) == [job.id]
        session.refresh(job)
        assert job.rq_job_id not in (None, first)
    finally:
        engine.dispose()


def test_a_job_whose_worker_died_is_enqueued_at_once(session: Any, job: Job, rq_settings: Any) -> None:
    engine = make_engine(rq_settings)
    try:
        assert claim_job(session=session, job_id=job.id, worker="gone:1") is not None
        session.commit()
        _age(session, job, heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
        assert recover_rq_jobs(rq_settings, make_sessionmaker(engine)) == [job.id]
        session.refresh(job)
        assert (job.status, job.attempts) == ("queued", 1)
        assert job.rq_job_id is not None and _rq_status(rq_settings, job.rq_job_id) == "queued"
    finally:
        engine.dispose()


def test_jobs_queued_under_the_old_function_name_still_run() -> None:
    # RQ stores the function by name with every queued job; jobs queued before the move name service.execute.
    assert import_attribute("service.execute.run_job") is run_job
    assert import_attribute(JOB_FUNCTION) is run_job
