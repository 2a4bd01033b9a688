"""``/v1/datasets``: upload a dataset (``.npz``, CSV or Parquet; validated before it is stored), list and show them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from service.api.deps import PageDep, SessionDep, SettingsDep, StoreDep
from service.api.routes import documented, multipart_body
from service.api.uploads import receive_upload
from service.catalog import datasets
from service.catalog import queries as catalog
from service.catalog.reclaim import retire_dataset
from service.schemas import DatasetPublic, DatasetSpec, DatasetsPublic, GcPublic, RetiredPublic

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    summary="Upload a dataset (.npz, .csv or .parquet) with its JSON spec",
    responses=documented(409, 413, 415, 422),
    openapi_extra=multipart_body(
        "DatasetSpec",
        "an np.savez archive (x of shape (N, *input shape) plus integer label arrays named after the teacher "
        "outputs they label), or a CSV/Parquet table of feature columns plus the label columns spec.labels names",
    ),
)
async def create_dataset(request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep) -> object:
    limit = settings.max_upload_bytes
    return await receive_upload(
        request,
        store=store,
        max_bytes=limit,
        spec_model=DatasetSpec,
        register=lambda upload, spec: datasets.register_dataset(
            session=session, file=upload.file, filename=upload.filename, spec=spec, max_bytes=limit, store=store
        ),
    )


@router.get("", response_model=DatasetsPublic, summary="List datasets, newest first", responses=documented(422))
def list_datasets(session: SessionDep, page: PageDep) -> DatasetsPublic:
    rows, count = catalog.list_datasets(session=session, offset=page.offset, limit=page.limit)
    return DatasetsPublic(data=[DatasetPublic.model_validate(r) for r in rows], count=count)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="Show a dataset", responses=documented(404, 422))
def get_dataset(dataset_id: uuid.UUID, session: SessionDep) -> object:
    return catalog.get_dataset(session=session, dataset_id=dataset_id)


@router.delete(
    "/{dataset_id}",
    response_model=RetiredPublic,
    summary="Delete a dataset and its finished jobs, and free its file (admin; refused while factor sets or active "
    "jobs use it)",
    responses=documented(404, 409, 422),
)
async def delete_dataset(dataset_id: uuid.UUID, request: Request, store: StoreDep) -> RetiredPublic:
    name, report = await run_in_threadpool(
        retire_dataset, factory=request.app.state.sessionmaker, store=store, dataset_id=dataset_id
    )
    return RetiredPublic(deleted=name, freed=GcPublic(**vars(report)))
