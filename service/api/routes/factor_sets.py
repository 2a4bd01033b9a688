"""``/v1/factor-sets``: registered factor sets with their factors, metrics, artifacts and lineage; new versions
by extension (a job training new tasks against the frozen CKN), by removing tasks, or by importing a run."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from service.api.deps import PageDep, RunnerDep, SessionDep, SettingsDep, StoreDep
from service.api.routes import documented, multipart_body
from service.api.uploads import receive_upload
from service.catalog import queries as catalog
from service.jobs import derive
from service.jobs.extend import submit_extension
from service.jobs.samples import factor_set_samples
from service.schemas import (
    FactorSetExtend,
    FactorSetImport,
    FactorSetPublic,
    FactorSetsPublic,
    JobPublic,
    SamplesPublic,
    TasksRemove,
    factor_set_public,
)

router = APIRouter(prefix="/v1/factor-sets", tags=["factor sets"])


@router.get("", response_model=FactorSetsPublic, summary="List factor sets, newest first", responses=documented(422))
def list_factor_sets(session: SessionDep, page: PageDep, name: str | None = None) -> FactorSetsPublic:
    rows, count = catalog.list_factor_sets(session=session, offset=page.offset, limit=page.limit, name=name)
    return FactorSetsPublic(data=[factor_set_public(r) for r in rows], count=count)


@router.get(
    "/{factor_set_id}", response_model=FactorSetPublic, summary="Show a factor set", responses=documented(404, 422)
)
def get_factor_set(factor_set_id: uuid.UUID, session: SessionDep) -> FactorSetPublic:
    return factor_set_public(catalog.get_factor_set(session=session, factor_set_id=factor_set_id))


@router.get(
    "/{factor_set_id}/samples",
    response_model=SamplesPublic,
    summary="Held-out samples (test split) of the data a factor set was trained on, with true labels",
    responses=documented(404, 422, 500),
)
async def get_samples(
    factor_set_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="first sample")] = 0,
    limit: Annotated[int, Query(ge=1, le=64, description="samples to return (at most 64)")] = 8,
) -> object:
    fs = await run_in_threadpool(catalog.get_factor_set, session=session, factor_set_id=factor_set_id)
    return await run_in_threadpool(
        factor_set_samples, fs=fs, store=store, work_dir=settings.work_dir, offset=offset, limit=limit
    )


@router.post(
    "/import",
    status_code=201,
    response_model=FactorSetPublic,
    summary="Import a run made by `kf factorize` elsewhere (a tar of its parts/ and report.json), verified",
    responses=documented(404, 409, 413, 415, 422),
    openapi_extra=multipart_body("FactorSetImport", "a tar archive of the run directory (parts/, report.json)"),
)
async def import_factor_set(request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep) -> object:
    row = await receive_upload(
        request,
        store=store,
        max_bytes=settings.max_upload_bytes,
        spec_model=FactorSetImport,
        register=lambda upload, spec: derive.import_run(
            session=session, store=store, archive=upload.file.path, spec=spec, work_dir=settings.work_dir
        ),
        suffix=".tar",
    )
    return factor_set_public(row)


@router.post(
    "/{ref}/tasks",
    status_code=202,
    response_model=JobPublic,
    summary="Extend a factor set with new tasks trained against its frozen CKN (a job; registers version+1)",
    responses=documented(404, 422, 503),
)
def extend_factor_set(
    ref: str, body: FactorSetExtend, session: SessionDep, settings: SettingsDep, runner: RunnerDep
) -> object:
    return submit_extension(session=session, settings=settings, runner=runner, ref=ref, body=body)


@router.post(
    "/{ref}/remove-tasks",
    status_code=201,
    response_model=FactorSetPublic,
    summary="Register version+1 without some tasks (the other parts reused by reference, nothing trained)",
    responses=documented(404, 409, 422),
)
def remove_tasks(ref: str, body: TasksRemove, session: SessionDep, store: StoreDep) -> FactorSetPublic:
    return factor_set_public(derive.remove_tasks(session=session, store=store, ref=ref, tasks=body.tasks))
