"""``/v1/factor-sets``: registered factor sets with their factors, metrics, artifacts, lineage and aliases; new
versions by extension (a job training new tasks against the frozen CKN), by removing tasks, or by importing a run.

``DELETE /v1/factor-sets/{id or name:version}`` retires a version (refused while an alias points at it) and
frees the artifacts no other row references. A factor set in a path is any reference: its id, ``name`` (latest
version), ``name:version`` or ``name@alias``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from service.api.deps import PageDep, RunnerDep, RuntimeDep, SessionDep, SettingsDep, StoreDep
from service.api.routes import documented, multipart_body
from service.api.uploads import receive_upload
from service.catalog import aliases as catalog_aliases
from service.catalog import queries as catalog
from service.catalog.reclaim import retire_factor_set
from service.jobs import derive
from service.jobs.extend import submit_extension
from service.jobs.samples import factor_set_samples
from service.schemas import (
    AliasesPublic,
    AliasPublic,
    AliasSet,
    FactorSetExtend,
    FactorSetImport,
    FactorSetPublic,
    FactorSetsPublic,
    GcPublic,
    JobPublic,
    Name,
    RetiredPublic,
    SamplesPublic,
    TasksRemove,
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
