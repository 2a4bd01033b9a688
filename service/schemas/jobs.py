"""Schemas of factorization jobs: what a job is asked to do (a new factor set, an extension, a removal, an
import) and what it reports."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.base import NON_EMPTY, ClientModel, Name, ServerModel, present
from service.schemas.catalog import TaskIn


class RecipeOverrides(ClientModel):
    """Changes to the recipe, validated against kf_core's configs when the job is submitted."""

    epochs: int | None = Field(default=None, ge=1, le=100_000)
    samples: int | None = Field(default=None, ge=1, le=100_000_000)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    train: dict[str, Any] = Field(default_factory=dict, description="kf_core TrainConfig fields")
    factor: dict[str, Any] = Field(default_factory=dict, description="kf_core FactorConfig fields (ckn, tsn, ...)")
    data: dict[str, Any] = Field(
        default_factory=dict, description="data split fields: samples, seed, test_fraction, split_seed, labels"
    )


class JobCreate(ClientModel):
    """``POST /v1/jobs``: factorize a teacher on a dataset."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [present("dataset"), present("dataset_id")]})

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
        json_schema_extra=NON_EMPTY,  # the engine refuses an empty list, naming the teacher's tasks
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
        _exactly_one_dataset(self.dataset, self.dataset_id)
        return self


class FactorSetExtend(ClientModel):
    """``POST /v1/factor-sets/{ref}/tasks``: train new tasks against the factor set's frozen CKN (a job)."""

    model_config = ConfigDict(json_schema_extra={"not": {"allOf": [present("dataset"), present("dataset_id")]}})

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


class TasksRemove(ClientModel):
    """``POST /v1/factor-sets/{ref}/remove-tasks``: a new version without these tasks (parts reused)."""

    tasks: list[str] = Field(min_length=1, description="names of the tasks to leave out")


class FactorSetImport(ClientModel):
    """The JSON ``spec`` of ``POST /v1/factor-sets/import``: where the imported run's factor set belongs."""

    name: Name = Field(description="name to register it under (the next version of that name)")
    teacher_id: uuid.UUID = Field(description="the teacher the run distilled (already uploaded)")
    dataset: str | None = Field(default=None, description="a built-in dataset it was trained on")
    dataset_id: uuid.UUID | None = Field(default=None, description="an uploaded dataset it was trained on")

    @model_validator(mode="after")
    def _one_dataset(self) -> FactorSetImport:
        _exactly_one_dataset(self.dataset, self.dataset_id)
        return self


class JobPublic(ServerModel):
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


def _exactly_one_dataset(dataset: str | None, dataset_id: uuid.UUID | None) -> None:
    """The rule of a new job's and an import's dataset: a built-in one or an uploaded one, never both."""
    if (dataset is None) == (dataset_id is None):
        raise ValueError("give exactly one of 'dataset' (dsprites or digits) and 'dataset_id' (an uploaded one)")
