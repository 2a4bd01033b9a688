"""The JSON fast path of tensor data: the same float32 values as the general path, or a refusal (None) that
sends the request down the general path and its usual errors."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError

from service.api.routes import parse_tensor_json
from service.serving.tensor_json import _flat, _nested, parse_array, split_array
from service.serving.v2 import InferRequest


def _general(values: Any) -> np.ndarray:
    array: np.ndarray = np.asarray(json.loads(json.dumps(values))).astype(np.float32)
    return array


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).random((1, 1, 8, 8)).astype(np.float32).ravel().tolist(),  # float32 reprs
        np.random.default_rng(1).random((2, 1, 3, 4)).tolist(),  # nested, float64 reprs
        (np.random.default_rng(2).standard_normal(64) * 1e-30).tolist(),  # exponents
        [0, 1, -7, 16777217, 2**40, 1e-05, -0.0, 3.4028235e38, 1e-45],
        [[1, 2.5], [3, 4]],
        [],
        [2**70, -(2**64), 18446744073709551615, 0.5],  # integers past 64 bits: simdjson refuses them, orjson reads
    ],
    ids=["flat", "nested", "exponents", "ints-and-edges", "mixed", "empty", "big-ints"],
)
def test_values_are_those_of_the_general_path(values: Any) -> None:
    body = json.dumps({"id": "r", "inputs": [{"name": "x", "data": values, "shape": [1]}]}).encode()
    split = split_array(body, "data")
    assert split is not None
    rest, text = split
    assert json.loads(rest)["inputs"][0]["data"] == []
    assert json.loads(rest)["id"] == "r"
    got = parse_array(text)
    want = _general(values)
    assert got is not None and got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"data": [1, "2"]}]},  # a string
        {"inputs": [{"data": [1, None]}]},
        {"inputs": [{"data": [True, 1]}]},
        {"inputs": [{"data": [1, {}]}]},  # an object without a string in it
        {"id": "data", "inputs": [{"data": [1, 2]}]},  # the key's name elsewhere: not unique
        {"inputs": [{"data": [1, 2]}], "id": "data"},  # ... before the array or after it
        {"inputs": [{"data": [[1, 2], [3, 4]]}], "id": "data"},
        {"inputs": [{"data": [1, [2], 3]}]},  # a bracket inside a flat array
        {"inputs": [{"data": [1, 2]}, {"data": [3]}]},
        {"inputs": [{"name": "x"}]},  # no such key
    ],
)
def test_anything_unusual_is_left_to_the_general_path(body: dict[str, Any]) -> None:
    split = split_array(json.dumps(body).encode(), "data")
    assert split is None or parse_array(split[1]) is None  # cut out (no string inside), then refused


def test_ragged_or_broken_arrays_are_refused() -> None:
    assert parse_array(b"[[1, 2], [3]]") is None
    assert parse_array(b"[ [1, 2], [3]]") is None  # nested after a space: not read as flat (simdjson would flatten)
    assert parse_array(b"[1, [2, 3]]") is None
    assert parse_array(b"[1, , 2]") is None
    assert parse_array(b"[1e, 2]") is None
    assert split_array(b'{"data": [1, 2', "data") is None  # never closed


def test_nested_arrays_keep_their_shape_and_ragged_ones_are_refused() -> None:
    x = np.random.default_rng(3).random((2, 1, 3, 4)).astype(np.float32)
    got = parse_array(json.dumps(x.tolist()).encode())
    assert got is not None and got.shape == (2, 1, 3, 4) and np.array_equal(got, x)
    assert parse_array(json.dumps([[[1, 2], [3, 4]], [[5, 6], [7]]]).encode()) is None
    assert parse_array(json.dumps([[1, 2], [3, 4], [5]]).encode()) is None
    assert parse_array(json.dumps([[[1]], [[2]]]).encode()).shape == (2, 1, 1)  # type: ignore[union-attr]


_ROWS = [[float(r)] * 20 for r in range(4)]  # rows long enough for the simdjson reader to take them


@pytest.mark.parametrize(
    "values",
    [
        [_ROWS[0], _ROWS[1][:19], _ROWS[2] + [9.0], _ROWS[3]],  # 80 numbers; first and last rows of 20
        [[*_ROWS[0][:19], [2.0]], _ROWS[1]],  # an array where a number should be: 40 numbers in 2 rows of 20
        [*_ROWS, 5.0, 6.0],  # numbers beside the rows
        [[_ROWS[0], _ROWS[1]], [_ROWS[2] + [7.0] * 10, _ROWS[3][:10]]],  # as many arrays and numbers as (2, 2, 20)
        [[_ROWS[0]], [_ROWS[1][:10], _ROWS[2][:10]]],
        _ROWS,  # rectangular: read
        [[_ROWS[0], _ROWS[1]], [_ROWS[2], _ROWS[3]]],
        [[]],  # an empty dimension: left to numpy
        [[1, 2], [3]],  # short rows: left to numpy, which refuses this one
    ],
)
def test_a_nesting_simdjson_would_flatten_is_read_only_when_it_is_rectangular(values: Any) -> None:
    got = parse_array(json.dumps(values).encode())
    try:
        want: np.ndarray | None = np.array(values, dtype=np.float32)
    except ValueError:
        want = None
    assert (got is None) == (want is None)
    if want is not None:
        assert got is not None and got.shape == want.shape and np.array_equal(got, want)


def test_the_simdjson_readers_take_the_usual_tensors_themselves() -> None:
    """Not left to orjson: a reader that refused these would give the same answers, only slower."""
    image = np.random.default_rng(5).random((2, 1, 64, 64)).astype(np.float32)
    nested = _nested(json.dumps(image.tolist()).encode())
    assert nested is not None and np.array_equal(nested, image)
    flat = _flat(json.dumps(image.ravel().tolist()).encode())
    assert flat is not None and np.array_equal(flat, image.ravel())
    spaced = _nested(json.dumps(image.tolist(), indent=1).encode())  # newlines and indentation everywhere
    assert spaced is not None and np.array_equal(spaced, image)
    assert _nested(json.dumps([[_ROWS[0], _ROWS[1]], [_ROWS[2] + [7.0] * 10, _ROWS[3][:10]]]).encode()) is None


def test_one_parser_per_thread_reads_document_after_document_whatever_failed_before() -> None:
    """simdjson's parser refuses a document while a proxy of the previous one lives: every outcome lets go of it."""
    ragged = json.dumps([_ROWS[0], _ROWS[1][:19], _ROWS[2] + [9.0], _ROWS[3]]).encode()  # fails deep in the check
    bad = [b"[1, null]", b"[1e400]", b"[1, 2", b'[1, "2"]', ragged]
    for text in [*bad, b"[1, 2]", *bad, json.dumps(_ROWS).encode(), b"[3.5]"]:
        got = parse_array(text)
        assert (got is None) == (text in bad)
    assert _nested(json.dumps(_ROWS).encode()) is not None  # the parser is still free after all of that
    results: list[np.ndarray | None] = []
    worker = threading.Thread(target=lambda: results.append(parse_array(b"[4, 5, 6]")))
    worker.start()
    worker.join()
    assert results[0] is not None and results[0].tolist() == [4.0, 5.0, 6.0]


def test_the_rest_of_a_body_is_validated_once_per_distinct_rest_and_the_data_every_time() -> None:
    """A client's requests differ in their data only: the rest's validation is remembered by its bytes (the same
    parsed request comes back), while every request's array is read anew; any other rest is validated afresh."""

    def body(data: list[float], request_id: str) -> bytes:
        tensor = {"name": "x", "shape": [1, len(data)], "datatype": "FP32", "data": data}
        return json.dumps({"id": request_id, "inputs": [tensor]}).encode()

    def parse(raw: bytes) -> tuple[InferRequest, np.ndarray | None]:
        return parse_tensor_json(raw, InferRequest, "data", lambda b: b.inputs[0].data == [])

    first, a = parse(body([1.0, 2.0], "r1"))
    again, b = parse(body([3.0, 4.0], "r1"))
    other, c = parse(body([1.0, 2.0], "r2"))
    assert again is first and other is not first
    assert (first.id, other.id) == ("r1", "r2")
    assert a is not None and b is not None and c is not None
    assert (a.tolist(), b.tolist(), c.tolist()) == ([1.0, 2.0], [3.0, 4.0], [1.0, 2.0])
    with pytest.raises(RequestValidationError):  # an invalid rest is never remembered: refused every time
        parse(body([1.0], "r1").replace(b'"FP32"', b"7"))
    with pytest.raises(RequestValidationError):
        parse(body([1.0], "r1").replace(b'"FP32"', b"7"))
