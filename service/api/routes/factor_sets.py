"""``/v1/factor-sets``: registered factor sets with their factors, metrics, artifacts and lineage."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from service.api.routes import documented
from service.catalog import queries as catalog
from service.deps import PageDep, SessionDep
from service.schemas import FactorSetPublic, FactorSetsPublic, factor_set_public

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
