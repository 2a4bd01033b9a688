"""The /v1 serving API's logic between the routes and the runtime: decode a batch, shape the answers."""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np

from service.errors import InvalidInputError
from service.runtime import Entry, Runtime
from service.schemas import AssemblyOutput, AssemblyPublic, FactorSetBrief, TensorSpec

__all__ = ["assembly_public", "decode_inputs", "predictions_json"]

MAX_NPY_HEADER = 1 << 16


def decode_inputs(inputs: list[Any] | str) -> np.ndarray:
    """A numeric array from nested lists, or from a base64-encoded ``.npy`` file (never a pickle)."""
    if isinstance(inputs, str):
        try:
            raw = base64.b64decode(inputs, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError(
                "inputs is a string but not valid base64; send nested lists, or base64 of a .npy file "
                "(numpy.save), e.g. base64.b64encode(buf.getvalue()).decode()"
            ) from None
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInputError(
                f"inputs is not a base64-encoded .npy array ({exc}); write it with numpy.save"
            ) from None
        if not isinstance(array, np.ndarray):
            raise InvalidInputError("inputs must encode one array (.npy), not an archive (.npz)")
        return array
    try:
        array = np.asarray(inputs)
    except (ValueError, TypeError):
        raise InvalidInputError(
            "inputs must be a rectangular nested list of numbers of shape (N, C, H, W): every row the same length"
        ) from None
    if array.dtype.kind not in "fiub":
        raise InvalidInputError(
            "inputs must be a rectangular nested list of numbers of shape (N, C, H, W), "
            f"got elements of type {array.dtype.kind!r} (strings, nulls or objects)"
        )
    return array


def assembly_public(entry: Entry, state: str, runtime: Runtime) -> AssemblyPublic:
    fs = entry.factor_set
    return AssemblyPublic(
        id=entry.assembly_id,
        factor_set=FactorSetBrief(id=fs.id, name=fs.name, version=fs.version),
        tasks=list(entry.tasks),
        combined=entry.combined,
        input=TensorSpec(name=entry.input_name, datatype="FP32", shape=[d or -1 for d in entry.input_shape]),
        outputs=[
            AssemblyOutput(name=o.name, datatype="FP32", shape=[-1, len(o.class_names)], task=o.task, kind=o.kind)
            for o in entry.outputs
        ],
        graph_sha256=entry.graph_sha256,
        size_bytes=entry.size_bytes,
        provider=runtime.provider.name,
        cache=state,
        source=entry.source,
        build_ms=round(entry.build_ms, 3),
        onnx_url=f"/v1/assemblies/{entry.assembly_id}/onnx",
    )


def predictions_json(entry: Entry, outputs: list[np.ndarray], *, logits: bool, runtime: Runtime) -> bytes:
    """The /v1/predict response body, serialized directly (the batch can be large; no per-float validation)."""
    values = dict(zip((o.name for o in entry.outputs), outputs, strict=True))
    predictions: dict[str, Any] = {}
    for task, logit_out, prob_out in entry.heads():
        p = values[prob_out.name]
        labels = p.argmax(axis=1)
        item: dict[str, Any] = {
            "labels": labels.tolist(),
            "class_names": [prob_out.class_names[i] for i in labels],
            "probabilities": p.tolist(),
        }
        if logits:
            item["logits"] = values[logit_out.name].tolist()
        predictions[task] = item
    fs = entry.factor_set
    body = {
        "factor_set": {"id": str(fs.id), "name": fs.name, "version": fs.version},
        "assembly_id": str(entry.assembly_id),
        "tasks": list(entry.tasks),
        "provider": runtime.provider.name,
        "predictions": predictions,
    }
    return json.dumps(body, separators=(",", ":")).encode()
