"""Datasets jobs train on: the built-in generators (dsprites, digits) and uploaded ``.npz`` archives.

An upload is validated by loading it with kf_core exactly as a job will (``allow_pickle=False``), after a check
that its members cannot decompress to more than ``_INFLATE_FACTOR`` times the upload limit (a zip bomb would
otherwise exhaust the API's memory during validation).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactWriter
from service.catalog.models import Dataset
from service.errors import InvalidInputError
from service.schemas import DatasetInfo, DatasetSpec

__all__ = ["builtin_classes", "inspect_dataset", "register_dataset"]

_INFLATE_FACTOR = 8


def builtin_classes(name: str) -> dict[str, list[str]]:
    """Label columns and class names of a built-in dataset, without generating any data."""
    if name == "dsprites":
        from kf_core import dsprites_class_names as class_names

        return {k: list(v) for k, v in class_names().items()}
    if name == "digits":
        return {"digit": [str(d) for d in range(10)]}
    raise InvalidInputError(f"unknown built-in dataset {name!r}; built-in datasets: digits, dsprites")


def inspect_dataset(path: Path, spec: DatasetSpec, *, max_bytes: int) -> DatasetInfo:
    """Validate an uploaded ``.npz`` against ``spec``; raise a 4xx error if it is unusable."""
    from kf_core import load_npz

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


def register_dataset(*, session: Session, file: ArtifactWriter, spec: DatasetSpec, max_bytes: int) -> Dataset:
    """Validate the received archive, then store and register it (committed), or raise and keep nothing."""
    info = inspect_dataset(file.path, spec, max_bytes=max_bytes)
    stored = file.commit()
    artifact = catalog.record_artifact(session=session, stored=stored, media_type="application/x-npz")
    dataset = catalog.create_dataset(
        session=session, name=spec.name, description=spec.description, info=info, artifact=artifact
    )
    session.commit()
    return dataset
