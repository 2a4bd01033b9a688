"""``/v1/factor-sets``: registered factor sets with their factors, metrics, artifacts and lineage."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from service.api.routes import documented
from service.catalog import queries as catalog
from service.deps import PageDep, SessionDep, SettingsDep, StoreDep
from service.jobs.samples import factor_set_samples
from service.schemas import FactorSetPublic, FactorSetsPublic, SamplesPublic, factor_set_public

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
