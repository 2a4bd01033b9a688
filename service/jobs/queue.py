"""The RQ side of jobs: put a job's run on its Redis queue, and ask Redis whether an RQ job is still alive.

Callers pass the job function itself (:func:`service.jobs.run.run_job`); RQ stores its import path with the
queued job. Taking it as an argument keeps this module below both its callers: the runners, which enqueue new
and recovered jobs, and a job run, which enqueues itself again after a failure a retry may fix.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob

from service.catalog import queries as catalog
from service.catalog.models import Job
from service.config import Settings
from service.errors import QueueUnavailableError

__all__ = ["connect", "enqueue_rq", "rq_status"]

JobFunction = Callable[[str], str]


def connect(settings: Settings) -> redis.Redis:
    """A client for ``KF_REDIS_URL`` with timeouts, so an unreachable Redis fails fast instead of hanging."""
    assert settings.redis_url is not None
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)


def enqueue_rq(settings: Settings, job: Job, *, function: JobFunction, at: dt.datetime | None = None) -> str:
    """Put ``function(job.id)`` on the job's RQ queue and record the RQ job's id on ``job`` (and ``at`` as its
    update time, when given; the caller commits).

    Raises :class:`QueueUnavailableError` if Redis is unreachable.
    """
    rq_id = f"kf-{job.id}-{secrets.token_hex(4)}"  # a fresh RQ job per run, never one that already ran
    try:
        Queue(job.queue, connection=connect(settings)).enqueue_call(
            function,
            args=(str(job.id),),
            job_id=rq_id,
            timeout=settings.job_timeout_s,
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description=f"factorize job {job.id} ({job.factor_set_name})",
        )
    except redis.RedisError as e:
        raise QueueUnavailableError(f"the job queue at KF_REDIS_URL is unreachable ({e}); try again later") from e
    catalog.record_enqueued(job=job, rq_job_id=rq_id, at=at)
    return rq_id


def rq_status(conn: Any, rq_id: str | None) -> str | None:
    """The RQ job's status (``queued``, ``started``, ...), or None when Redis no longer knows it."""
    if rq_id is None:
        return None
    try:
        status = RqJob.fetch(rq_id, connection=conn).get_status()
    except NoSuchJobError:
        return None
    return None if status is None else str(status.value)
