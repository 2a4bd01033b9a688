"""The /v1 serving API's logic between the routes and the runtime: :func:`predict` (decode a batch, route it to
the resident factor set, shape the answers) and the assembly description."""

from __future__ import annotations

import binascii
import io
import math
import re
from typing import Any

import numpy as np
import orjson

from kf_core import prediction_json
from service.errors import InvalidInputError
from service.schemas import AssemblyOutput, AssemblyPublic, FactorSetBrief, PredictRequest, TensorSpec
from service.serving.assemblies import LoadedAssembly
from service.serving.runtime import Route, Runtime

__all__ = ["assembly_public", "decode_inputs", "predict", "predictions_json"]

MAX_NPY_HEADER = 1 << 16


async def predict(runtime: Runtime, body: PredictRequest, array: np.ndarray | None = None) -> bytes:
    """``POST /v1/predict``: the response body for a parsed request (``array``: inputs already decoded)."""
    x = array if array is not None else decode_inputs(body.inputs)
    resident, route = await runtime.route(body.factor_set, body.tasks, combined=body.combined)
    outputs = await runtime.run(resident, route, runtime.check_batch(x, route))
    return predictions_json(route, outputs, logits=body.logits, runtime=runtime)


def decode_inputs(inputs: list[Any] | str) -> np.ndarray:
    """A numeric array from nested lists, or from a base64-encoded ``.npy`` file (never a pickle)."""
    if isinstance(inputs, str):
        try:
            raw = binascii.a2b_base64(inputs, strict_mode=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError(
                "inputs is a string but not valid base64; send nested lists, or base64 of a .npy file "
                "(numpy.save), e.g. base64.b64encode(buf.getvalue()).decode()"
            ) from None
        return _read_npy(raw)
    try:
        array = np.asarray(inputs)
    except (ValueError, TypeError):
        raise InvalidInputError(
            "inputs must be a rectangular nested list of numbers of shape (N, *input shape), e.g. (N, D) or "
            "(N, C, H, W): every row the same length"
        ) from None
    if array.dtype.kind not in "fiub":
        raise InvalidInputError(
            "inputs must be a rectangular nested list of numbers of shape (N, *input shape), "
            f"got elements of type {array.dtype.kind!r} (strings, nulls or objects)"
        )
    return array


_NPY_HEADER = re.compile(
    rb"^\{'descr': '([<>|=]?[fiub][1248])', 'fortran_order': (True|False), 'shape': \(((?:\d+, ?)*\d*)\), \} *\n$"
)


def _read_npy(raw: bytes) -> np.ndarray:
    """A numeric ``.npy`` array. The common header (written by ``numpy.save``) is parsed with one regex rather than
    numpy's ``literal_eval`` of it, a third of the cost of a small request; anything else goes through np.load."""
    if raw[:6] == b"\x93NUMPY" and raw[6:7] == b"\x01" and len(raw) >= 10:
        n = int.from_bytes(raw[8:10], "little")
        match = _NPY_HEADER.match(raw[10 : 10 + n])
        if match:
            dtype = np.dtype(match.group(1).decode())
            shape = tuple(int(d) for d in match.group(3).split(b",") if d.strip())
            body = memoryview(raw)[10 + n :]
            if len(body) != dtype.itemsize * math.prod(shape):
                raise InvalidInputError(
                    f"inputs: the .npy header says shape {shape} of {dtype}, but the data holds {len(body)} bytes"
                )
            flat: np.ndarray = np.frombuffer(body, dtype=dtype)
            return flat.reshape(shape, order="F" if match.group(2) == b"True" else "C")
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidInputError(
            f"inputs is not a base64-encoded .npy array ({exc}); write it with numpy.save"
        ) from None
    if not isinstance(array, np.ndarray):
        raise InvalidInputError("inputs must encode one array (.npy), not an archive (.npz)")
    return array


def assembly_public(entry: LoadedAssembly, state: str, runtime: Runtime) -> AssemblyPublic:
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
        provider=entry.provider or runtime.provider.name,
        cache=state,
        source=entry.source,
        build_ms=round(entry.build_ms, 3),
        onnx_url=f"/v1/assemblies/{entry.assembly_id}/onnx",
    )


def predictions_json(entry: Route, outputs: list[np.ndarray], *, logits: bool, runtime: Runtime) -> bytes:
    """The /v1/predict response body, serialized directly (the batch can be large; no per-float validation)."""
    values = dict(zip((o.name for o in entry.outputs), outputs, strict=True))
    predictions: dict[str, Any] = {}
    for task, logit_out, prob_out in entry.heads():
        # orjson writes the float32 arrays directly (shortest round-trip repr)
        logit_values = values[logit_out.name] if logits else None
        predictions[task] = prediction_json(values[prob_out.name], prob_out.class_names, logit_values)
    fs = entry.factor_set
    body = {
        "factor_set": {"id": str(fs.id), "name": fs.name, "version": fs.version},
        "assembly_id": None,  # served from the resident parts; POST /v1/assemblies gives the fused graph
        "tasks": list(entry.tasks),
        "provider": entry.provider or runtime.provider.name,
        "predictions": predictions,
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
