"""API schemas (pydantic), apart from the ORM models: what clients send (``*Create``, ``*Spec``) and receive
(``*Public``, lists as ``*sPublic(data, count)``). Unknown fields in requests are refused, so a typo in an option
is a 422 naming the field rather than a silently ignored setting.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

__all__ = [
    "AliasPublic",
    "AliasSet",
    "AliasesPublic",
    "ArtifactPublic",
    "AssemblyCreate",
    "AssemblyOutput",
    "AssemblyPublic",
    "DatasetInfo",
    "DatasetPublic",
    "DatasetSpec",
    "DatasetsPublic",
    "ErrorBody",
    "FactorPublic",
    "FactorSetBrief",
    "FactorSetPublic",
    "FactorSetsPublic",
    "GcPublic",
    "JobCreate",
    "JobPublic",
    "JobsPublic",
    "PredictRequest",
    "PredictResponse",
    "RecipeOverrides",
    "RetiredPublic",
    "SamplesPublic",
    "TaskIn",
    "TaskPrediction",
    "TeacherInfo",
    "TeacherPublic",
    "TeacherSpec",
    "TeachersPublic",
    "TensorSpec",
    "WhoAmI",
    "alias_public",
    "factor_set_public",
]

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Constraints stated in the OpenAPI document that the server checks itself, with a message that says more than
# JSON Schema's would (the list of known tasks, "the batch has no samples"): the document says what is accepted,
# the server says what to fix. An empty list also stands for an array read straight into numpy (fast path).
_NON_EMPTY: dict[str, Any] = {"minItems": 1}


def _present(field: str) -> dict[str, Any]:
    """JSON Schema: ``field`` is present and not null."""
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorBody(BaseModel):
    """Every error response: what went wrong and what to do, and the error's class name."""

    detail: str
    error: str


class TaskIn(_In):
    """One task: a teacher output, or a subset of its classes."""

    name: str = Field(description="task name: a letter, then letters, digits or underscores")
    output: str | None = Field(default=None, description="teacher output it reads (default: same as name)")
    classes: list[int] | None = Field(default=None, description="subset of the output's classes, in order")
    label: str | None = Field(default=None, description="dataset label column (default: the output's name)")


class TeacherSpec(_In):
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


class ArtifactPublic(_Out):
    id: uuid.UUID
    sha256: str
    size_bytes: int
    media_type: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return f"/v1/artifacts/{self.sha256}"


class TeacherInfo(_Out):
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


class DatasetSpec(_In):
    """The JSON part of ``POST /v1/datasets``."""

    name: Name
    labels: list[str] | None = Field(default=None, description="label arrays to keep (default: all)")
    description: str = Field(default="", max_length=10_000)


class DatasetInfo(_Out):
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


class RecipeOverrides(_In):
    """Changes to the recipe, validated against kf_core's configs when the job is submitted."""

    epochs: int | None = Field(default=None, ge=1, le=100_000)
    samples: int | None = Field(default=None, ge=1, le=100_000_000)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    train: dict[str, Any] = Field(default_factory=dict, description="kf_core TrainConfig fields")
    factor: dict[str, Any] = Field(default_factory=dict, description="kf_core FactorConfig fields (ckn, tsn, ...)")
    data: dict[str, Any] = Field(
        default_factory=dict, description="data split fields: samples, seed, test_fraction, split_seed, labels"
    )


class JobCreate(_In):
    """``POST /v1/jobs``: factorize a teacher on a dataset."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [_present("dataset"), _present("dataset_id")]})

    teacher_id: uuid.UUID
    dataset: str | None = Field(default=None, description="a built-in dataset: dsprites or digits")
    dataset_id: uuid.UUID | None = Field(default=None, description="an uploaded dataset (POST /v1/datasets)")
    recipe: str | dict[str, Any] | None = Field(
        default=None,
        description=(
            "built-in recipe name (dsprites, digits, tabular) or a recipe object with at least 'factor'; default: "
            "a built-in dataset's own recipe, for uploaded data one chosen from a sample's shape: 'tabular' for "
            "vectors (D,), 'dsprites' for images (C, H, W) of at least 64 x 64, 'digits' otherwise"
        ),
    )
    tasks: list[str | TaskIn] | None = Field(
        default=None,
        description="task names (of the teacher's or recipe's tasks) or task objects; at least one",
        json_schema_extra=_NON_EMPTY,  # the engine refuses an empty list, naming the teacher's tasks
    )
    overrides: RecipeOverrides = Field(default_factory=RecipeOverrides)
    processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="training processes (torch.distributed, one host); the global batch is split over them",
    )
    name: Name | None = Field(default=None, description="name of the factor set it registers")
    max_attempts: int | None = Field(default=None, ge=1, le=20)

    @model_validator(mode="after")
    def _one_dataset(self) -> JobCreate:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of 'dataset' (dsprites or digits) and 'dataset_id' (an uploaded one)")
        return self


class FactorSetExtend(_In):
    """``POST /v1/factor-sets/{ref}/tasks``: train new tasks against the factor set's frozen CKN (a job)."""

    model_config = ConfigDict(json_schema_extra={"not": {"allOf": [_present("dataset"), _present("dataset_id")]}})

    tasks: list[str | TaskIn] = Field(
        min_length=1, description="the new tasks: names of the teacher's tasks or objects"
    )
    teacher_id: uuid.UUID | None = Field(
        default=None, description="teacher to distil the new tasks from (default: the factor set's; same input)"
    )
    dataset: str | None = Field(default=None, description="a built-in dataset (default: the factor set's dataset)")
    dataset_id: uuid.UUID | None = Field(default=None, description="an uploaded dataset (POST /v1/datasets)")
    overrides: RecipeOverrides = Field(default_factory=RecipeOverrides)
    max_attempts: int | None = Field(default=None, ge=1, le=20)

    @model_validator(mode="after")
    def _one_dataset(self) -> FactorSetExtend:
        if self.dataset is not None and self.dataset_id is not None:
            raise ValueError("give at most one of 'dataset' and 'dataset_id'")
        return self


class TasksRemove(_In):
    """``POST /v1/factor-sets/{ref}/remove-tasks``: a new version without these tasks (parts reused)."""

    tasks: list[str] = Field(min_length=1, description="names of the tasks to leave out")


class FactorSetImport(_In):
    """The JSON ``spec`` of ``POST /v1/factor-sets/import``: where the imported run's factor set belongs."""

    name: Name = Field(description="name to register it under (the next version of that name)")
    teacher_id: uuid.UUID = Field(description="the teacher the run distilled (already uploaded)")
    dataset: str | None = Field(default=None, description="a built-in dataset it was trained on")
    dataset_id: uuid.UUID | None = Field(default=None, description="an uploaded dataset it was trained on")

    @model_validator(mode="after")
    def _one_dataset(self) -> FactorSetImport:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of 'dataset' (dsprites or digits) and 'dataset_id' (an uploaded one)")
        return self


class JobPublic(_Out):
    id: uuid.UUID
    status: str
    stage: str
    teacher_id: uuid.UUID
    dataset_id: uuid.UUID
    factor_set_name: str
    queue: str
    progress: float
    epoch: int
    epochs: int
    step: int
    steps_total: int
    metrics: dict[str, Any]
    attempts: int
    max_attempts: int
    error: str | None
    worker: str | None
    checkpoint_step: int | None
    resumed_from_step: int | None
    cancel_requested_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None
    factor_set_id: uuid.UUID | None = None
    recipe: dict[str, Any]


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class FactorPublic(_Out):
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


class FactorSetPublic(_Out):
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


# --------------------------------------------------------------------------- serving (/v1/assemblies, /v1/predict)
FactorSetRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="factor set id, name (its latest version), name:version or name@alias",
        examples=["dsprites-demo", "dsprites-demo:2"],
    ),
]


class AssemblyCreate(_In):
    """Assemble a task subset of a factor set into one graph (or find it in the cache)."""

    factor_set: FactorSetRef
    tasks: list[Annotated[str, Field(max_length=64)]] = Field(
        max_length=256, description="task names (any order, each once); at least one", json_schema_extra=_NON_EMPTY
    )
    combined: bool = Field(
        default=False, description="also output one softmax over the union of the tasks' classes (class-subset tasks)"
    )


class TensorSpec(BaseModel):
    name: str
    datatype: str = Field(description="FP32 or INT64")
    shape: list[int] = Field(description="dimensions; -1 for the batch axis")


class AssemblyOutput(TensorSpec):
    task: str = Field(description="the task (or 'combined') the output belongs to")
    kind: str = Field(description="logits or probs")


class FactorSetBrief(BaseModel):
    id: uuid.UUID
    name: str
    version: int


class AssemblyPublic(BaseModel):
    id: uuid.UUID
    factor_set: FactorSetBrief
    tasks: list[str] = Field(description="in the factor set's order")
    combined: bool
    input: TensorSpec
    outputs: list[AssemblyOutput]
    graph_sha256: str
    size_bytes: int
    provider: str = Field(description="ONNX Runtime execution provider the session runs on")
    cache: str = Field(description="hit (was cached), miss (built by this request) or shared (built by another)")
    source: str = Field(description="composed from the parts here, or stored (loaded from the artifact store)")
    build_ms: float = Field(description="time it took to compose or load the graph and warm its session")
    onnx_url: str


class PredictRequest(_In):
    """Predictions for a batch from the assembly of ``tasks``."""

    factor_set: FactorSetRef
    tasks: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=256,
        description="task names; omitted: every task of the factor set",
        json_schema_extra=_NON_EMPTY,
    )
    inputs: list[Any] | str = Field(
        description="the batch, shape (N, *input shape): (N, D) vectors or (N, C, H, W) images, whatever the "
        "factor set takes; nested lists of numbers, or a base64-encoded .npy file",
        json_schema_extra={"anyOf": [{"type": "array", "minItems": 1}, {"type": "string", "minLength": 1}]},
    )
    combined: bool = Field(default=False, description="also predict over the union of the tasks' classes")
    logits: bool = Field(default=False, description="include the raw logits")


class TaskPrediction(BaseModel):
    labels: list[int] = Field(description="per sample, the index of the most probable class")
    class_names: list[str] = Field(description="per sample, the name of that class")
    probabilities: list[list[float]]
    logits: list[list[float]] | None = None


class PredictResponse(BaseModel):
    factor_set: FactorSetBrief
    assembly_id: uuid.UUID | None = Field(
        default=None,
        description="always null: predictions are served from the factor set's resident parts; "
        "POST /v1/assemblies gives the fused graph of a subset and its id",
    )
    tasks: list[str]
    provider: str
    predictions: dict[str, TaskPrediction] = Field(description="per task (and 'combined' if asked for)")


class SamplesPublic(BaseModel):
    """Held-out samples of a factor set (its test split), ready to post to ``/v1/predict`` as ``inputs``."""

    factor_set: FactorSetBrief
    dataset: str
    split: str = Field(description="always 'test': samples the factor set was not trained on")
    count: int = Field(description="samples in the split")
    offset: int
    shape: list[int] = Field(description="shape of inputs: (N, *input shape), e.g. (N, D) or (N, C, H, W)")
    value_range: list[float] = Field(description="[min, max] of the split's values (to map drawings onto)")
    inputs: list[Any] = Field(description="nested lists of that shape")
    labels: dict[str, list[int | None]] = Field(
        description="per task, each sample's class index in the task (null: its class is outside a subset task)"
    )
