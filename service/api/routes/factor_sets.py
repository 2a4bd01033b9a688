"""``/v1/factor-sets``: registered factor sets with their factors, metrics, artifacts, lineage and aliases.

``DELETE /v1/factor-sets/{id or name:version}`` retires a version (refused while an alias points at it) and
frees the artifacts no other row references. A factor set in a path is any reference: its id, ``name`` (latest
version), ``name:version`` or ``name@alias``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from service.api.deps import PageDep, RuntimeDep, SessionDep, SettingsDep, StoreDep
from service.api.routes import documented
from service.catalog import aliases as catalog_aliases
from service.catalog import queries as catalog
from service.catalog.reclaim import retire_factor_set
from service.jobs.samples import factor_set_samples
from service.schemas import (
    AliasesPublic,
    AliasPublic,
    AliasSet,
    FactorSetPublic,
    FactorSetsPublic,
    GcPublic,
    Name,
    RetiredPublic,
    SamplesPublic,
    alias_public,
    factor_set_public,
)

router = APIRouter(prefix="/v1/factor-sets", tags=["factor sets"])

Ref = Annotated[str, Path(min_length=1, max_length=200, description="factor set id, name, name:version or name@alias")]
AliasName = Annotated[str, Path(min_length=1, max_length=64, description="alias name, e.g. prod")]


@router.get("", response_model=FactorSetsPublic, summary="List factor sets, newest first", responses=documented(422))
def list_factor_sets(session: SessionDep, page: PageDep, name: str | None = None) -> FactorSetsPublic:
    rows, count = catalog.list_factor_sets(session=session, offset=page.offset, limit=page.limit, name=name)
    return FactorSetsPublic(data=[factor_set_public(r) for r in rows], count=count)


@router.get("/{ref}", response_model=FactorSetPublic, summary="Show a factor set", responses=documented(404, 422))
def get_factor_set(ref: Ref, session: SessionDep) -> FactorSetPublic:
    return factor_set_public(catalog.resolve_factor_set(session=session, ref=ref))


@router.delete(
    "/{ref}",
    response_model=RetiredPublic,
    summary="Delete a factor set version and free the artifacts only it used (admin)",
    responses=documented(404, 409, 422),
)
async def delete_factor_set(ref: Ref, request: Request, store: StoreDep, runtime: RuntimeDep) -> RetiredPublic:
    fs_id, label, report = await run_in_threadpool(
        retire_factor_set, factory=request.app.state.sessionmaker, store=store, ref=ref
    )
    runtime.drop(fs_id)
    return RetiredPublic(deleted=label, freed=GcPublic(**vars(report)))


@router.get(
    "/{name}/aliases",
    response_model=AliasesPublic,
    summary="List a factor set's aliases",
    responses=documented(404, 422),
)
def list_aliases(name: Annotated[Name, Path()], session: SessionDep) -> AliasesPublic:
    rows = catalog_aliases.list_aliases(session=session, name=name)
    return AliasesPublic(data=[alias_public(r) for r in rows], count=len(rows))


@router.put(
    "/{name}/aliases/{alias}",
    response_model=AliasPublic,
    summary="Point an alias at a version (create or move it; admin)",
    responses=documented(404, 422),
)
def set_alias(
    name: Annotated[Name, Path()], alias: AliasName, body: AliasSet, session: SessionDep, runtime: RuntimeDep
) -> AliasPublic:
    row = catalog_aliases.set_alias(session=session, name=name, alias=alias, version=body.version)
    session.commit()
    runtime.forget(name)  # this replica serves the move at once; others within the resolve TTL
    return alias_public(row)


@router.delete(
    "/{name}/aliases/{alias}",
    response_model=AliasPublic,
    summary="Delete an alias (admin)",
    responses=documented(404, 422),
)
def delete_alias(
    name: Annotated[Name, Path()], alias: AliasName, session: SessionDep, runtime: RuntimeDep
) -> AliasPublic:
    row = catalog_aliases.delete_alias(session=session, name=name, alias=alias)
    out = alias_public(row)
    session.commit()
    runtime.forget(name)
    return out


@router.get(
    "/{ref}/samples",
    response_model=SamplesPublic,
    summary="Held-out samples (test split) of the data a factor set was trained on, with true labels",
    responses=documented(404, 422, 500),
)
async def get_samples(
    ref: Ref,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="first sample")] = 0,
    limit: Annotated[int, Query(ge=1, le=64, description="samples to return (at most 64)")] = 8,
) -> object:
    fs = await run_in_threadpool(catalog.resolve_factor_set, session=session, ref=ref)
    return await run_in_threadpool(
        factor_set_samples, fs=fs, store=store, work_dir=settings.work_dir, offset=offset, limit=limit
    )
