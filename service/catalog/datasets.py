"""Datasets jobs train on: the built-in generators (dsprites, digits) and uploaded ``.npz`` archives.

An upload is validated by loading it with kf_core exactly as a job will (``allow_pickle=False``), after a check
that its members cannot decompress to more than ``_INFLATE_FACTOR`` times the upload limit (a zip bomb would
otherwise exhaust the API's memory during validation).
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.api.uploads import Upload, parse_spec, read_upload
from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore
from service.catalog.models import Dataset
from service.config import Settings
from service.errors import InvalidInputError
from service.schemas import DatasetSpec

__all__ = ["DatasetInfo", "builtin_classes", "inspect_dataset", "upload_dataset"]

_INFLATE_FACTOR = 8


@dataclass(frozen=True)
class DatasetInfo:
    input_shape: list[int]
    classes: dict[str, list[str]]
    num_samples: int


def builtin_classes(name: str) -> dict[str, list[str]]:
    """Label columns and class names of a built-in dataset, without generating any data."""
    if name == "dsprites":
        from kf_core.data.dsprites import class_names

        return {k: list(v) for k, v in class_names().items()}
    if name == "digits":
        return {"digit": [str(d) for d in range(10)]}
    raise InvalidInputError(f"unknown built-in dataset {name!r}; built-in datasets: digits, dsprites")


def inspect_dataset(path: Path, spec: DatasetSpec, *, max_bytes: int) -> DatasetInfo:
    """Validate an uploaded ``.npz`` against ``spec``; raise a 4xx error if it is unusable."""
    from kf_core.data.npz import load_npz

    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise InvalidInputError("the uploaded file is not an .npz archive; write the dataset with np.savez") from None
    if inflated > _INFLATE_FACTOR * max_bytes:
        raise InvalidInputError(
            f"the archive would decompress to {inflated} bytes, more than {_INFLATE_FACTOR}x the upload limit; "
            "upload a smaller dataset"
        )
    ds = load_npz(path, labels=spec.labels)
    return DatasetInfo(
        input_shape=[int(s) for s in ds.input_shape],
        classes={k: list(v) for k, v in ds.classes.items()},
        num_samples=len(ds),
    )


async def upload_dataset(request: Request, *, session: Session, settings: Settings, store: ArtifactStore) -> Dataset:
    """``POST /v1/datasets``: stream the archive, validate it, then store and register it, or nothing."""
    upload = await read_upload(request, store=store, max_bytes=settings.max_upload_bytes, suffix=".npz")
    try:
        spec = parse_spec(DatasetSpec, upload.fields)
        return await run_in_threadpool(_register, upload, spec, session, settings.max_upload_bytes)
    finally:
        upload.file.abort()  # no-op once committed


def _register(upload: Upload, spec: DatasetSpec, session: Session, max_bytes: int) -> Dataset:
    info = inspect_dataset(upload.file.path, spec, max_bytes=max_bytes)
    stored = upload.file.commit()
    artifact = catalog.record_artifact(session=session, stored=stored, media_type="application/x-npz")
    fields = {**dataclasses.asdict(info), "name": spec.name, "description": spec.description}
    dataset = catalog.create_dataset(session=session, fields=fields, artifact=artifact)
    session.commit()
    return dataset
