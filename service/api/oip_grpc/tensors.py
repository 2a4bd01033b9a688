"""Tensors of the gRPC protocol to and from numpy.

Inputs arrive either as ``raw_input_contents`` (little-endian bytes, one entry per input: what tritonclient sends)
or as typed ``contents`` (``fp32_contents``); raw bytes become an array without a copy. Outputs go back the way
the inputs came: raw bytes in ``raw_output_contents`` (as Triton answers) or typed contents.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.errors import InvalidInputError
from service.serving.v2 import check_tensor

__all__ = ["decode_input", "encode_outputs"]

_TYPED = ("bool", "int", "int64", "uint", "uint64", "fp64", "bytes")


def decode_input(request: Any, *, input_name: str, input_shape: list[int | None]) -> np.ndarray:
    """A ``ModelInferRequest``'s one input as a float32 array of its declared shape, or a clear error."""
    if len(request.inputs) != 1:
        raise InvalidInputError(f"this model takes exactly one input, {input_name!r}; got {len(request.inputs)}")
    tensor = request.inputs[0]
    shape = [int(d) for d in tensor.shape]
    check_tensor(tensor.name, tensor.datatype, shape, input_name=input_name, input_shape=input_shape)
    n = math.prod(shape)
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1:
            raise InvalidInputError(f"raw_input_contents holds {len(raw)} entries; send one per input (here 1)")
        if tensor.HasField("contents"):
            raise InvalidInputError(f"input {input_name!r} has both contents and raw_input_contents; send one of them")
        data = raw[0]
        if len(data) != 4 * n:
            raise InvalidInputError(
                f"input {input_name!r}: shape {shape} in FP32 is {4 * n} bytes, raw_input_contents holds {len(data)}"
            )
        array: np.ndarray = np.frombuffer(data, dtype="<f4")
        return array.reshape(shape)
    values = tensor.contents.fp32_contents
    if len(values) != n:
        other = [f"{k}_contents" for k in _TYPED if len(getattr(tensor.contents, f"{k}_contents"))]
        hint = f" (it sets {', '.join(other)}; FP32 data goes in fp32_contents)" if other else ""
        raise InvalidInputError(
            f"input {input_name!r}: shape {shape} needs {n} values, contents.fp32_contents holds {len(values)}{hint}"
        )
    return np.array(values, dtype=np.float32).reshape(shape)


def encode_outputs(response: Any, arrays: list[tuple[str, str, np.ndarray]], *, raw: bool) -> None:
    """Add ``(name, datatype, array)`` tensors to a ``ModelInferResponse``: raw bytes, or typed contents."""
    for name, datatype, array in arrays:
        out = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
        elif datatype == "FP32":
            out.contents.fp32_contents.extend(array.ravel().tolist())
        else:
            out.contents.int64_contents.extend(array.ravel().tolist())
