"""Security: ONNX external data refused, request bodies limited while they stream, no client string as a path,
API keys checked in constant time (both databases where a catalog is involved)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from sqlalchemy import func, select

from service.catalog.models import Artifact, Teacher
from tests.conftest import make_settings, open_client


def _external_data_onnx(location: str) -> bytes:
    """A valid one-output model whose weight claims to live in ``location``, outside the file."""
    w = numpy_helper.from_array(np.ones((64, 10), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    w.external_data.add(key="length", value=str(64 * 10 * 4))
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("digit", onnx.TensorProto.FLOAT, ["N", 10])
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["digit"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "weights.bin"])
def test_onnx_with_external_data_is_refused_and_nothing_is_stored(client: Any, session: Any, location: str) -> None:
    data = _external_data_onnx(location)
    r = client.post("/v1/teachers", files={"file": ("t.onnx", data)}, data={"spec": '{"name": "ext"}'})
    assert r.status_code == 422, r.text
    assert "external" in r.json()["detail"] and location in r.json()["detail"]
    assert session.scalar(select(func.count()).select_from(Teacher)) == 0
    assert session.scalar(select(func.count()).select_from(Artifact)) == 0


def test_json_bodies_over_the_limit_are_413_before_or_while_reading(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, max_request_bytes=4096)
    with open_client(settings, run_jobs=False) as api:
        big = {"factor_set": "fs", "inputs": [[0.0] * 2000]}
        r = api.post("/v1/predict", json=big)  # Content-Length says it: refused before reading
        assert r.status_code == 413 and "KF_MAX_REQUEST_BYTES" in r.json()["detail"]
        r = api.post("/v2/models/fs/infer", json={"inputs": [{"name": "x", "data": [0.0] * 2000}]})
        assert r.status_code == 413 and "KF_MAX_REQUEST_BYTES" in r.json()["error"]  # v2's shape

        def chunks() -> Any:  # no Content-Length: counted as it streams
            yield b'{"factor_set": "fs", "inputs": ['
            for _ in range(100):
                yield b"0.0," * 50
            yield b"0.0]}"

        r = api.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "KF_MAX_REQUEST_BYTES" in r.json()["detail"]
        r = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert api.post("/v1/predict", json={"factor_set": "fs", "inputs": [[0.0]]}).status_code == 404  # small: ok


def test_client_strings_never_become_paths(client: Any) -> None:
    for ref in ("../../etc/passwd", "..%2F..%2Fetc", "/etc/passwd", "fs/../../x"):
        r = client.post("/v1/assemblies", json={"factor_set": ref, "tasks": ["a"]})
        assert r.status_code == 404, (ref, r.text)
    assert client.get("/v1/artifacts/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/v1/artifacts/" + "a" * 63 + "/").status_code in (404, 422)
    assert client.get("/v2/models/..%2F..%2Fetc/ready").status_code == 404


def test_api_keys_are_compared_in_constant_time(session: Any, migrated: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.api import auth
    from service.catalog.keys import create_key

    _, key = create_key(session=session, scope="predict")
    session.commit()
    calls: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording)
    prefix = key.split("_")[1]
    wrong_secret = f"kf_{prefix}_" + "A" * 43
    unknown_prefix = "kf_000000000000_" + "A" * 43
    with open_client(migrated, run_jobs=False) as api:
        for k in (wrong_secret, unknown_prefix, key):
            api.get("/v1/jobs", headers={"Authorization": f"Bearer {k}"})
    assert len(calls) == 3  # every candidate, even one whose prefix matches nothing, goes through compare_digest
