"""Schemas of the catalog's resources: teachers, datasets, factor sets and their aliases, garbage collection,
the caller's key."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from service.schemas.base import ClientModel, Name, ServerModel


class TaskIn(ClientModel):
    """One task: a teacher output, or a subset of its classes."""

    name: str = Field(description="task name: a letter, then letters, digits or underscores")
    output: str | None = Field(default=None, description="teacher output it reads (default: same as name)")
    classes: list[int] | None = Field(default=None, description="subset of the output's classes, in order")
    label: str | None = Field(default=None, description="dataset label column (default: the output's name)")


class TeacherSpec(ClientModel):
    """The JSON part of ``POST /v1/teachers``: how to read the uploaded model."""

    name: Name
    outputs: dict[str, str | int] | None = Field(
        default=None,
        description="logical output name -> graph output name (ONNX) or dict key / tuple index (TorchScript); "
        "ONNX default: every graph output not used as a feature",
    )
    features: list[str | int] | None = Field(
        default=None, description="outputs used as stage features (ONNX default: outputs named feat_*)"
    )
    input_shape: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="one sample's shape without the batch dimension: [D] for vectors, [C, H, W] for images; "
        "required for TorchScript, checked against the graph for ONNX",
    )
    class_names: dict[str, list[str]] = Field(default_factory=dict)
    tasks: list[TaskIn] = Field(default_factory=list, description="default tasks of jobs on this teacher")
    description: str = Field(default="", max_length=10_000)


class ArtifactPublic(ServerModel):
    id: uuid.UUID
    sha256: str
    size_bytes: int
    media_type: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return f"/v1/artifacts/{self.sha256}"


class TeacherInfo(ServerModel):
    """What validating a teacher file learned: every catalog column of a teacher besides its name and file."""

    format: str
    input_shape: list[int]
    outputs: dict[str, str | int]
    output_sizes: dict[str, int]
    features: list[str | int]
    feature_dims: list[int]
    class_names: dict[str, list[str]]
    tasks: list[dict[str, Any]]


class TeacherPublic(TeacherInfo):
    id: uuid.UUID
    name: str
    filename: str
    description: str
    artifact: ArtifactPublic
    created_at: dt.datetime


class TeachersPublic(BaseModel):
    data: list[TeacherPublic]
    count: int


class DatasetSpec(ClientModel):
    """The JSON part of ``POST /v1/datasets``."""

    name: Name
    labels: list[str] | None = Field(default=None, description="label arrays to keep (default: all)")
    description: str = Field(default="", max_length=10_000)


class DatasetInfo(ServerModel):
    """What validating a dataset learned: its input shape, label columns with their class names, and size."""

    input_shape: list[int]
    classes: dict[str, list[str]]
    num_samples: int


class DatasetPublic(DatasetInfo):
    id: uuid.UUID
    name: str
    source: str
    description: str
    artifact: ArtifactPublic | None
    created_at: dt.datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class FactorPublic(ServerModel):
    task: str
    output: str
    classes: list[int]
    class_names: list[str]
    metrics: dict[str, Any]
    artifact: ArtifactPublic


class Lineage(BaseModel):
    teacher: dict[str, Any]
    dataset: dict[str, Any]
    job: dict[str, Any]


class FactorSetPublic(ServerModel):
    id: uuid.UUID
    name: str
    version: int
    teacher_id: uuid.UUID
    dataset_id: uuid.UUID
    job_id: uuid.UUID
    config: dict[str, Any]
    metrics: dict[str, Any]
    input_spec: dict[str, Any]
    ckn_artifact: ArtifactPublic
    manifest_artifact: ArtifactPublic
    report_artifact: ArtifactPublic
    factors: list[FactorPublic]
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at this version (name@alias)")
    lineage: Lineage
    created_at: dt.datetime


class FactorSetsPublic(BaseModel):
    data: list[FactorSetPublic]
    count: int


def factor_set_public(fs: Any) -> FactorSetPublic:
    """A ``models.FactorSet`` with its lineage: which teacher file, which data and which job run produced it."""
    teacher, dataset, job = fs.teacher, fs.dataset, fs.job
    lineage = Lineage(
        teacher={"id": teacher.id, "name": teacher.name, "format": teacher.format, "sha256": teacher.artifact.sha256},
        dataset={
            "id": dataset.id,
            "name": dataset.name,
            "source": dataset.source,
            "sha256": dataset.artifact.sha256 if dataset.artifact is not None else None,
            "spec": fs.config.get("data"),
        },
        job={
            "id": job.id,
            "attempts": job.attempts,
            "resumed_from_step": job.resumed_from_step,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        },
    )
    aliases = [a.alias for a in fs.aliases]
    return FactorSetPublic.model_validate(
        {**_columns(fs), "factors": fs.factors, "aliases": aliases, "lineage": lineage}
    )


class GcPublic(BaseModel):
    """What a garbage collection (or a retirement) deleted; in a dry run, what it would delete."""

    dry_run: bool
    count: int = Field(description="artifacts deleted")
    bytes: int = Field(description="bytes freed")
    sha256: list[str] = Field(description="the deleted artifacts")
    skipped: int = Field(description="found unreferenced, but referenced again or in use when deleted: kept")


class RetiredPublic(BaseModel):
    """A deleted factor set version, teacher or dataset, and the storage its deletion freed."""

    deleted: str = Field(description="what was deleted (name:version, teacher or dataset name)")
    freed: GcPublic


class AliasSet(BaseModel):
    """``PUT /v1/factor-sets/{name}/aliases/{alias}``: the version the alias points at from now on."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="an existing version of the factor set")


class AliasPublic(BaseModel):
    name: str
    alias: str
    ref: str = Field(description="the reference to use: name@alias")
    version: int
    factor_set_id: uuid.UUID
    updated_at: dt.datetime


class AliasesPublic(BaseModel):
    data: list[AliasPublic]
    count: int


def alias_public(row: Any) -> AliasPublic:
    return AliasPublic(
        name=row.name,
        alias=row.alias,
        ref=f"{row.name}@{row.alias}",
        version=row.factor_set.version,
        factor_set_id=row.factor_set_id,
        updated_at=row.updated_at,
    )


def _columns(row: Any) -> dict[str, Any]:
    names = FactorSetPublic.model_fields.keys() - {"factors", "aliases", "lineage"}
    return {n: getattr(row, n) for n in names}


class WhoAmI(BaseModel):
    """Who the API takes the caller for."""

    scope: str = Field(description="admin, predict, or anonymous (the catalog has no key: everything is open)")
    key_prefix: str | None = Field(description="the key's public prefix (as in logs and `kf keys list`)")
