"""``/v1/datasets``: upload an ``.npz`` dataset (validated before it is stored), list and show datasets."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from service.api.routes import documented, multipart_body
from service.catalog import datasets
from service.catalog import queries as catalog
from service.deps import PageDep, SessionDep, SettingsDep, StoreDep
from service.schemas import DatasetPublic, DatasetsPublic

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    summary="Upload an .npz dataset with its JSON spec",
    responses=documented(409, 413, 415, 422),
    openapi_extra=multipart_body("DatasetSpec", "an np.savez archive: x plus one integer label array per task"),
)
async def create_dataset(request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep) -> object:
    return await datasets.upload_dataset(request, session=session, settings=settings, store=store)


@router.get("", response_model=DatasetsPublic, summary="List datasets, newest first", responses=documented(422))
def list_datasets(session: SessionDep, page: PageDep) -> DatasetsPublic:
    rows, count = catalog.list_datasets(session=session, offset=page.offset, limit=page.limit)
    return DatasetsPublic(data=[DatasetPublic.model_validate(r) for r in rows], count=count)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="Show a dataset", responses=documented(404, 422))
def get_dataset(dataset_id: uuid.UUID, session: SessionDep) -> object:
    return catalog.get_dataset(session=session, dataset_id=dataset_id)
