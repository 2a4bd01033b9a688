"""KServe Open Inference Protocol (v2) over HTTP/REST: schemas and tensor codecs.

Each factor set is a model (its name; versions are the factor set's versions). Inputs: one tensor, named like
the graph input (``x``), datatype ``FP32``, shape ``[N, *input shape]`` (``[N, D]``, ``[N, C, H, W]``, ...), data
flat in row-major order (nested lists are accepted too). Outputs, per task ``t``: ``logits_t`` and ``probs_t``
(FP32, ``[N, classes]``) and ``label_t`` (INT64, ``[N]``); the request's ``outputs`` select them, and so the tasks
to assemble (none requested: every task). For class-subset tasks, ``*_combined`` outputs give one softmax over the
union of the tasks' classes. Errors are ``{"error": "..."}``, as the protocol specifies.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from kf_core import COMBINED
from service.errors import InvalidInputError
from service.serving.assemblies import LoadedAssembly
from service.serving.refs import FactorSetInfo
from service.serving.runtime import Route, Runtime

__all__ = [
    "InferRequest",
    "InferResponse",
    "ModelMetadata",
    "binary_outputs",
    "check_tensor",
    "combined_classes",
    "decode_input",
    "encode_outputs",
    "model_metadata",
    "output_arrays",
    "predict",
    "requested_tasks",
]

KINDS = ("logits", "probs", "label")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Strict):
    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary tensor extension: binary_data_size, the tensor's bytes after the JSON"
    )
    data: list[Any] | None = Field(default=None, description="row-major values; omitted for binary tensor data")


class RequestOutput(_Strict):
    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferRequest(_Strict):
    id: str | None = Field(default=None, max_length=256, description="echoed in the response")
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(
        min_length=1,
        max_length=16,
        description="the model's one input (every factor set takes one)",
        json_schema_extra={"maxItems": 1},  # the server says which input it takes when given several
    )
    outputs: list[RequestOutput] | None = Field(default=None, max_length=1024)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any] = Field(description="execution provider and device in use, the model's tasks")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerReady(BaseModel):
    ready: bool


class ServerLive(BaseModel):
    live: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class V2Error(BaseModel):
    error: str


async def predict(
    runtime: Runtime, fs: FactorSetInfo, body: InferRequest, binary: bytes = b"", data: np.ndarray | None = None
) -> tuple[bytes, bytes]:
    """An inference request on model ``fs``: the response's JSON header and the binary tensor data after it
    (empty unless the client asked for binary outputs)."""
    tasks, combined, names = requested_tasks(fs, [o.name for o in body.outputs or ()])
    resident, route = await runtime.route(fs, tasks, combined=combined)
    x = decode_input(body, input_name=route.input_name, input_shape=route.input_shape, binary=binary, data=data)
    outputs = await runtime.run(resident, route, runtime.check_batch(x, route))
    result: dict[str, Any] = {"model_name": fs.name, "model_version": str(fs.version)}
    if body.id is not None:
        result["id"] = body.id
    result["outputs"], blobs = encode_outputs(route, outputs, names, binary=binary_outputs(body, names))
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), blobs


def output_names(fs: FactorSetInfo) -> list[tuple[str, str, str, int]]:
    """Every output a model offers: (name, task, kind, classes)."""
    out = []
    for t in fs.tasks:
        out += [(f"{kind}_{t.name}", t.name, kind, len(t.classes)) for kind in KINDS]
    return out


def model_metadata(fs: FactorSetInfo, *, provider: str, device: str, combined_classes: int | None) -> ModelMetadata:
    shape = [int(d) if d is not None else -1 for d in fs.input_spec["shape"]]
    outputs = [
        MetadataTensor(
            name=name, datatype="INT64" if kind == "label" else "FP32", shape=[-1] if kind == "label" else [-1, k]
        )
        for name, _, kind, k in output_names(fs)
    ]
    if combined_classes is not None:
        outputs += [
            MetadataTensor(name=f"logits_{COMBINED}", datatype="FP32", shape=[-1, combined_classes]),
            MetadataTensor(name=f"probs_{COMBINED}", datatype="FP32", shape=[-1, combined_classes]),
            MetadataTensor(name=f"label_{COMBINED}", datatype="INT64", shape=[-1]),
        ]
    return ModelMetadata(
        name=fs.name,
        versions=[str(v) for v in fs.versions],
        platform="onnxruntime_onnx",
        inputs=[MetadataTensor(name=str(fs.input_spec.get("name", "x")), datatype="FP32", shape=shape)],
        outputs=outputs,
        parameters={
            "execution_provider": provider,
            "device": device,
            "version": str(fs.version),
            "factor_set_id": str(fs.id),
            "tasks": fs.task_names,
        },
    )


def combined_classes(fs: FactorSetInfo) -> int | None:
    """Classes of the combined output, if all of the model's tasks are disjoint class subsets of one output."""
    if len(fs.tasks) < 2 or len({t.output for t in fs.tasks}) != 1:
        return None
    classes = [c for t in fs.tasks for c in t.classes]
    return len(classes) if len(set(classes)) == len(classes) else None


def requested_tasks(
    fs: FactorSetInfo, names: Sequence[str] | None
) -> tuple[tuple[str, ...] | None, bool, tuple[str, ...]]:
    """For the output ``names`` a request asks for (none: every task's): (tasks to assemble or None for all,
    combined, output names to return in order). Remembered per factor set and names (factor sets never change;
    every request of a client asks the same), so a request pays a dictionary lookup."""
    key = (fs.id, tuple(names or ()))
    hit = _REQUESTED.get(key)
    if hit is None:
        hit = _requested_tasks(fs, key[1])  # raises for unknown outputs: only valid requests are remembered
        if len(_REQUESTED) >= 4096:
            _REQUESTED.clear()
        _REQUESTED[key] = hit
    return hit


_REQUESTED: dict[tuple[uuid.UUID, tuple[str, ...]], tuple[tuple[str, ...] | None, bool, tuple[str, ...]]] = {}


def _requested_tasks(fs: FactorSetInfo, names: tuple[str, ...]) -> tuple[tuple[str, ...] | None, bool, tuple[str, ...]]:
    offered = {name: task for name, task, _, _ in output_names(fs)}
    combined_names = {f"{kind}_{COMBINED}" for kind in KINDS}
    if not names:
        return None, False, tuple(offered)
    tasks: list[str] = []
    combined = False
    for name in names:
        if name in combined_names:
            combined = True
        elif name in offered:
            if offered[name] not in tasks:
                tasks.append(offered[name])
        else:
            raise InvalidInputError(
                f"model {fs.name!r} has no output {name!r}; its outputs are {', '.join(offered)}"
                + (f", {', '.join(sorted(combined_names))}" if combined_classes(fs) is not None else "")
            )
    if len(set(names)) != len(names):
        raise InvalidInputError("an output is requested twice; request each output once")
    return tuple(tasks) or None, combined, names


def check_tensor(name: str, datatype: str, shape: list[int], *, input_name: str, input_shape: list[int | None]) -> None:
    """Raise a clear error unless a request's input tensor header fits the model's one FP32 input."""
    if name != input_name:
        raise InvalidInputError(f"unknown input {name!r}; this model takes one input named {input_name!r}")
    if datatype != "FP32":
        raise InvalidInputError(
            f"input {input_name!r} has datatype {datatype!r}, but the model takes FP32; send FP32 data"
        )
    want = [d if d is not None else -1 for d in input_shape]
    if len(shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, shape, strict=True)):
        raise InvalidInputError(f"input {input_name!r} has shape {shape}; the model takes {want} (-1: any)")
    if any(s < 0 for s in shape):
        raise InvalidInputError(f"input {input_name!r} has a negative dimension in shape {shape}")


def decode_input(
    request: InferRequest,
    *,
    input_name: str,
    input_shape: list[int | None],
    binary: bytes = b"",
    data: np.ndarray | None = None,
) -> np.ndarray:
    """The request's one input tensor as a float32 array of its declared shape, or a clear error.

    ``binary`` is what followed the JSON header (binary tensor extension): the input then declares
    ``parameters.binary_data_size`` and its little-endian FP32 values are those bytes. ``data`` is the input's
    ``data`` already read into numpy (:mod:`service.serving.tensor_json`), when it could be."""
    if len(request.inputs) != 1:
        raise InvalidInputError(f"this model takes exactly one input, {input_name!r}; got {len(request.inputs)}")
    tensor = request.inputs[0]
    check_tensor(tensor.name, tensor.datatype, tensor.shape, input_name=input_name, input_shape=input_shape)
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None or binary:
        return _binary_input(tensor, input_name, size, binary)
    if data is not None:
        return _sized(data, input_name, tensor.shape)
    if tensor.data is None:
        raise InvalidInputError(
            f"input {input_name!r} has no data: send 'data' (a list of numbers) or binary tensor data "
            "(parameters.binary_data_size and the Inference-Header-Content-Length header)"
        )
    try:
        data = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise InvalidInputError(
            f"input {input_name!r}: data must be a flat (or rectangular nested) list of numbers"
        ) from None
    if data.dtype.kind not in "fiu":
        raise InvalidInputError(
            f"input {input_name!r}: data must hold numbers for datatype FP32, got {data.dtype.kind!r}"
        )
    return _sized(data, input_name, tensor.shape)


def _sized(data: np.ndarray, name: str, shape: list[int]) -> np.ndarray:
    if data.size != math.prod(shape):
        raise InvalidInputError(
            f"input {name!r}: shape {shape} needs {math.prod(shape)} values, data holds {data.size}"
        )
    return data.reshape(shape).astype(np.float32, copy=False)


def _binary_input(tensor: RequestInput, name: str, size: Any, binary: bytes) -> np.ndarray:
    if tensor.data is not None:
        raise InvalidInputError(f"input {name!r} has both 'data' and binary data; send one of them")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(
            f"input {name!r}: binary data needs parameters.binary_data_size, a byte count, and the JSON header's "
            "length in the Inference-Header-Content-Length header"
        )
    want = 4 * math.prod(tensor.shape)
    if size != want or len(binary) != size:
        raise InvalidInputError(
            f"input {name!r}: shape {tensor.shape} in FP32 is {want} bytes; binary_data_size says {size} and "
            f"{len(binary)} bytes follow the JSON header"
        )
    return np.frombuffer(binary, dtype="<f4").reshape(tensor.shape)


def binary_outputs(request: InferRequest, names: Sequence[str]) -> set[str]:
    """Which of ``names`` the client wants as binary tensor data: each output's ``parameters.binary_data``, or
    every one with the request's ``parameters.binary_data_output``."""
    if request.parameters is not None and request.parameters.get("binary_data_output") is True:
        return set(names)
    if request.outputs is None:
        return set()
    return {o.name for o in request.outputs if o.parameters is not None and o.parameters.get("binary_data") is True}


def output_arrays(
    entry: LoadedAssembly | Route, outputs: list[np.ndarray], names: Sequence[str]
) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, little-endian array) of each output in ``names``; ``label_*`` from the probabilities."""
    result = []
    for name, datatype, i, label in _output_plan(entry, names):
        array = outputs[i]
        if label:
            result.append((name, datatype, array.argmax(axis=1).astype(_I8)))
        else:
            result.append((name, datatype, array if array.dtype == _F4 else array.astype(_F4)))
    return result


_F4, _I8 = np.dtype("<f4"), np.dtype("<i8")
_OutputPlan = tuple[tuple[str, str, int, bool], ...]  # per output name: (name, datatype, index in outputs, label?)
_PLANS: dict[tuple[int, tuple[str, ...]], tuple[list[Any], _OutputPlan]] = {}


def _output_plan(entry: LoadedAssembly | Route, names: Sequence[str]) -> _OutputPlan:
    """Where each of ``names`` comes from in ``entry``'s outputs, worked out once per entry and names (an entry's
    outputs never change; every request of a client asks for the same names). Keyed by the identity of the
    entry's output list, which the memo holds on to, so an identity is never reused while its plan is kept."""
    key = (id(entry.outputs), tuple(names))
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is entry.outputs:
        return hit[1]
    index = {o.name: i for i, o in enumerate(entry.outputs)}
    plan = []
    for name in names:
        kind, _, task = name.partition("_")
        if kind == "label":
            plan.append((name, "INT64", index[f"probs_{task}"], True))
        else:
            plan.append((name, "FP32", index[name], False))
    if len(_PLANS) >= 4096:
        _PLANS.clear()
    _PLANS[key] = (entry.outputs, tuple(plan))
    return tuple(plan)


def encode_outputs(
    entry: LoadedAssembly | Route, outputs: list[np.ndarray], names: Sequence[str], *, binary: set[str] | None = None
) -> tuple[list[dict[str, Any]], bytes]:
    """Response tensors for ``names``, and the bytes of those sent as binary tensor data (little-endian, in
    order), which then carry ``binary_data_size`` instead of ``data``."""
    binary = binary or set()
    result, blobs = [], []
    for name, datatype, array in output_arrays(entry, outputs, names):
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if name in binary:
            blob = np.ascontiguousarray(array).tobytes()
            blobs.append(blob)
            tensor["parameters"] = {"binary_data_size": len(blob)}
        else:
            tensor["data"] = array.ravel()
        result.append(tensor)
    return result, b"".join(blobs)
