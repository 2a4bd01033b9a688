"""A job's progress as a server-sent event stream: one ``job`` event (the JobPublic JSON) whenever the row
changes, a comment line as a keep-alive while it does not, and the end of the stream once the job is final.

The job row is the source of truth (workers write progress there, throttled), so the stream reads the row every
``interval_s`` in a worker thread and sends only changes: a watcher costs one indexed primary-key read per
interval, however many steps the job takes. A stream also ends after ``max_s`` so proxies never hold it forever;
clients reconnect.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from sqlalchemy.orm import Session, sessionmaker

from service.catalog import queries as catalog
from service.catalog.models import JobStatus
from service.schemas import JobPublic

__all__ = ["job_events"]

KEEP_ALIVE_S = 15.0


def _snapshot(factory: sessionmaker[Session], job_id: uuid.UUID) -> JobPublic:
    with factory() as session:
        return JobPublic.model_validate(catalog.get_job(session=session, job_id=job_id))


async def job_events(
    factory: sessionmaker[Session], job_id: uuid.UUID, *, interval_s: float = 0.5, max_s: float = 600.0
) -> AsyncIterator[bytes]:
    """SSE frames for ``job_id`` until it is final (or ``max_s`` passes). The job must exist (check first)."""
    started = last_sent = time.monotonic()
    last_version: tuple[object, ...] | None = None
    while True:
        job = await asyncio.to_thread(_snapshot, factory, job_id)
        version = (job.updated_at, job.status, job.step, job.stage, job.attempts, job.factor_set_id)
        now = time.monotonic()
        if version != last_version:
            last_version, last_sent = version, now
            yield b"event: job\ndata: " + job.model_dump_json().encode() + b"\n\n"
        elif now - last_sent >= KEEP_ALIVE_S:
            last_sent = now
            yield b": keep-alive\n\n"
        if JobStatus(job.status).is_final or now - started >= max_s:
            return
        await asyncio.sleep(interval_s)
