"""Datasets jobs train on: the built-in generators (dsprites, digits) and uploaded ``.npz`` archives or tables.

An ``.npz`` upload is validated by loading it with kf_core exactly as a job will (``allow_pickle=False``), after a
check that its members cannot decompress to more than ``_INFLATE_FACTOR`` times the upload limit (a zip bomb would
otherwise exhaust the API's memory during validation). A CSV or Parquet table (vectors: feature columns plus the
label columns ``spec.labels`` names) is read with :func:`kf_core.load_table` and stored as the ``.npz`` it gives,
so jobs read every uploaded dataset the same way. The kind of file comes from its bytes (zip: npz, ``PAR1``:
Parquet), then from its name (``.csv``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sqlalchemy.orm import Session

from kf_core import dsprites_class_names, load_breast_cancer, load_npz, load_table, save_npz
from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore, ArtifactWriter, StoredFile
from service.catalog.models import Dataset
from service.errors import InvalidInputError
from service.schemas import DatasetInfo, DatasetSpec

__all__ = ["builtin_classes", "detect_kind", "inspect_dataset", "register_dataset"]

_INFLATE_FACTOR = 8


def builtin_classes(name: str) -> dict[str, list[str]]:
    """Label columns and class names of a built-in dataset, without generating any data."""
    if name == "dsprites":
        return {k: list(v) for k, v in dsprites_class_names().items()}
    if name == "digits":
        return {"digit": [str(d) for d in range(10)]}
    if name == "breast_cancer":
        return {k: list(v) for k, v in load_breast_cancer(samples=1).classes.items()}  # reads a bundled CSV: ms
    raise InvalidInputError(f"unknown built-in dataset {name!r}; built-in datasets: breast_cancer, digits, dsprites")


def detect_kind(path: Path, filename: str) -> str:
    """``npz``, ``parquet`` or ``csv``: from the file's first bytes, else from its name (default ``npz``, whose
    validation then says what the service reads)."""
    with path.open("rb") as f:
        head = f.read(4)
    name = filename.lower()
    if zipfile.is_zipfile(path):
        return "npz"
    if head == b"PAR1" or name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".txt")):
        return "csv"
    return "npz"


def inspect_dataset(path: Path, spec: DatasetSpec, *, max_bytes: int) -> DatasetInfo:
    """Validate an uploaded ``.npz`` against ``spec``; raise a 4xx error if it is unusable."""
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise InvalidInputError(
            "the uploaded file is not an .npz archive; write the dataset with np.savez, or upload a table as a "
            ".csv (with a header row) or .parquet file"
        ) from None
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


def _table_to_npz(path: Path, kind: str, spec: DatasetSpec, store: ArtifactStore) -> tuple[DatasetInfo, StoredFile]:
    """Read a table as kf_core will and store the ``.npz`` it gives (what jobs read)."""
    if not spec.labels:
        raise InvalidInputError(
            f"a {kind} table needs 'labels' in its spec: the names of its label columns (every other column is a "
            'feature), e.g. {"name": "cancer", "labels": ["diagnosis"]}'
        )
    ds = load_table(path, labels=spec.labels, format=kind, name=spec.name)
    converted = path.with_name(path.name + ".npz")
    try:
        save_npz(ds, converted)
        stored = store.put_bytes(converted.read_bytes())
    finally:
        converted.unlink(missing_ok=True)
    info = DatasetInfo(
        input_shape=[int(s) for s in ds.input_shape],
        classes={k: list(v) for k, v in ds.classes.items()},
        num_samples=len(ds),
    )
    return info, stored


def register_dataset(
    *, session: Session, file: ArtifactWriter, filename: str, spec: DatasetSpec, max_bytes: int, store: ArtifactStore
) -> Dataset:
    """Validate the received archive or table, then store and register it (committed), or raise and keep nothing."""
    kind = detect_kind(file.path, filename)
    if kind == "npz":
        info = inspect_dataset(file.path, spec, max_bytes=max_bytes)
        stored = file.commit()
    else:
        info, stored = _table_to_npz(file.path, kind, spec, store)
    artifact = catalog.record_artifact(session=session, stored=stored, media_type="application/x-npz")
    dataset = catalog.create_dataset(
        session=session, name=spec.name, description=spec.description, info=info, artifact=artifact
    )
    session.commit()
    return dataset
