"""Tensors of the gRPC protocol to and from numpy.

Inputs arrive either as ``raw_input_contents`` (little-endian bytes, one entry per input: what tritonclient sends)
or as typed ``contents`` (``fp32_contents``); raw bytes become an array without a copy. Outputs go back the way
the inputs came: raw bytes in ``raw_output_contents`` (as Triton answers) or typed contents.

A raw answer is written straight to its wire bytes (:func:`raw_response`): building the ``ModelInferResponse``
message field by field and serializing it cost about a tenth of a call's server time, for a message that is a
few strings, shapes and the tensors' bytes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.errors import InvalidInputError
from service.serving.v2 import check_tensor

__all__ = ["decode_input", "encode_outputs", "raw_response"]

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


def raw_response(
    model_name: str, model_version: str, request_id: str, arrays: list[tuple[str, str, np.ndarray]]
) -> bytes:
    """A serialized ``ModelInferResponse`` with the tensors in ``raw_output_contents`` (little-endian bytes): the
    same bytes a parser reads from ``encode_outputs(..., raw=True)``'s message (tests/service/test_grpc.py)."""
    parts = [_field(1, model_name.encode()), _field(2, model_version.encode())]
    if request_id:
        parts.append(_field(3, request_id.encode()))
    for name, datatype, array in arrays:
        header = _TENSORS.get((name, datatype, array.shape))
        if header is None:
            shape = b"".join(_varint(d) for d in array.shape)  # packed repeated int64, dimensions >= 0
            header = _field(5, _field(1, name.encode()) + _field(2, datatype.encode()) + _field(3, shape))
            if len(_TENSORS) >= 4096:
                _TENSORS.clear()
            _TENSORS[(name, datatype, array.shape)] = header
        parts.append(header)
    for _, _, array in arrays:
        data = np.ascontiguousarray(array).tobytes()
        parts += [_RAW_TAG, _varint(len(data)), data]  # field 6, the tensor's bytes copied once (by join)
    return b"".join(parts)


# (name, datatype, shape) -> an output tensor's serialized description (field 5 of ModelInferResponse)
_TENSORS: dict[tuple[str, str, tuple[int, ...]], bytes] = {}
_RAW_TAG = bytes([6 << 3 | 2])  # raw_output_contents, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages, packed numbers)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data
