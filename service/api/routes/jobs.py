"""``/v1/jobs``: submit factorization jobs, follow their progress, cancel them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from service.api.routes import documented
from service.catalog import queries as catalog
from service.catalog.models import JobStatus
from service.deps import PageDep, RunnerDep, SessionDep, SettingsDep
from service.jobs import submit as jobs
from service.jobs.events import job_events
from service.schemas import JobCreate, JobPublic, JobsPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    summary="Submit a factorization job (queued; runs in the background)",
    responses=documented(422, 503),
)
def create_job(job_in: JobCreate, session: SessionDep, settings: SettingsDep, runner: RunnerDep) -> object:
    return jobs.submit_job(session=session, settings=settings, runner=runner, job_in=job_in)


@router.get("", response_model=JobsPublic, summary="List jobs, newest first", responses=documented(422))
def list_jobs(
    session: SessionDep,
    page: PageDep,
    status: JobStatus | None = None,
    name: Annotated[str | None, Query(max_length=128, description="only jobs registering this factor set")] = None,
) -> JobsPublic:
    rows, count = catalog.list_jobs(session=session, offset=page.offset, limit=page.limit, status=status, name=name)
    return JobsPublic(data=[JobPublic.model_validate(r) for r in rows], count=count)


@router.get(
    "/{job_id}", response_model=JobPublic, summary="Show a job and its progress", responses=documented(404, 422)
)
def get_job(job_id: uuid.UUID, session: SessionDep) -> object:
    return catalog.get_job(session=session, job_id=job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    summary="Cancel a job: a queued one at once, a running one within seconds",
    responses=documented(404, 409, 422),
)
def cancel_job(job_id: uuid.UUID, session: SessionDep) -> object:
    return jobs.cancel_job(session=session, job_id=job_id)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    summary="Follow a job: server-sent events, one per change of its row, until it is final",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: job` frames whose data is the JobPublic JSON; ends when the job is final.",
        },
        **documented(404, 422),
    },
)
def follow_job(job_id: uuid.UUID, session: SessionDep, request: Request) -> StreamingResponse:
    catalog.get_job(session=session, job_id=job_id)  # a 404 now, not an empty stream
    stream = job_events(request.app.state.sessionmaker, job_id)
    return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
