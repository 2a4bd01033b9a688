"""Schemas of serving over /v1: assemblies of task subsets and predictions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, Field

from service.schemas.base import NON_EMPTY, ClientModel

FactorSetRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="factor set id, name (its latest version), name:version or name@alias",
        examples=["dsprites-demo", "dsprites-demo:2"],
    ),
]


class AssemblyCreate(ClientModel):
    """Assemble a task subset of a factor set into one graph (or find it in the cache)."""

    factor_set: FactorSetRef
    tasks: list[Annotated[str, Field(max_length=64)]] = Field(
        max_length=256, description="task names (any order, each once); at least one", json_schema_extra=NON_EMPTY
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


class PredictRequest(ClientModel):
    """Predictions for a batch from the assembly of ``tasks``."""

    factor_set: FactorSetRef
    tasks: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        max_length=256,
        description="task names; omitted: every task of the factor set",
        json_schema_extra=NON_EMPTY,
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
