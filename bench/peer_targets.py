"""What ``bench/peers.py`` sends to each server and how it reads the answers: the KF endpoints and the peers.

Every request is one image asking for the five tasks' probabilities, in each server's own idiom: KF's /v1 JSON
and v2 (JSON, binary extension, gRPC), MLServer's v2 JSON, and ``{"x": nested lists}`` for the servers without a
tensor protocol (BentoML's numpy JSON, Ray Serve and FastAPI handlers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Parse = Callable[[bytes, dict[str, str]], list[np.ndarray]]

# Every server's HTTP layer is uvicorn, which picks uvloop and httptools when they are installed (KF has both):
# uvicorn[standard] in every environment, so that no peer parses HTTP with pure-Python h11 on asyncio's loop.
PEERS: dict[str, dict[str, Any]] = {
    "fastapi": {"label": "plain FastAPI + ONNX Runtime", "packages": ["fastapi", "uvicorn[standard]", "numpy"]},
    "bentoml": {"label": "BentoML (batchable API)", "packages": ["bentoml>=1.4,<1.5", "uvicorn[standard]", "numpy"]},
    # MLServer 1.7.1 runs on uvloop 0.21 (later ones change the loop API it uses)
    "mlserver": {
        "label": "MLServer (adaptive batching)",
        "packages": ["mlserver==1.7.1", "uvloop==0.21.0", "uvicorn[standard]", "numpy"],
    },
    "ray": {"label": "Ray Serve (@serve.batch)", "packages": ["ray[serve]>=2.40", "uvicorn[standard]", "numpy"]},
}


@dataclass
class Target:
    """One endpoint to measure: what to send (HTTP method, path, body, headers) and how to read the answer."""

    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    parse: Parse | None
    method: str = "POST"
    key: str = ""  # short name in the JSON result: kf_v2_json, bentoml, ...
    grpc: bool = False  # body is a gRPC-framed ModelInferRequest; path is the RPC's
    extra: dict[str, Any] = field(default_factory=dict)


def kf_targets(port: int, grpc_port: int, x: np.ndarray, tasks: list[str]) -> list[Target]:
    outputs = [f"probs_{t}" for t in tasks]
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    v1 = {"factor_set": "bench", "tasks": tasks, "inputs": x.tolist()}
    v2 = {"inputs": [{**tensor, "data": x.ravel().tolist()}], "outputs": [{"name": n} for n in outputs]}
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
        }
    ).encode()
    json_type = {"Content-Type": "application/json"}
    binary_headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    infer = "/v2/models/bench/infer"
    return [
        Target("KF /v1/predict (nested lists)", port, "/v1/predict", _dumps(v1), json_type, _v1(tasks), key="kf_v1"),
        Target("KF v2 JSON (flat data)", port, infer, _dumps(v2), json_type, _v2(outputs), key="kf_v2_json"),
        Target(
            "KF v2 binary extension", port, infer, header + x.tobytes(), binary_headers, _binary, key="kf_v2_binary"
        ),
        Target(
            "KF v2 gRPC (raw contents)",
            grpc_port,
            "/inference.GRPCInferenceService/ModelInfer",
            _grpc_body(x, outputs),
            {},
            None,
            key="kf_grpc",
            grpc=True,
            extra={"outputs": outputs},
        ),
    ]


def peer_target(name: str, port: int, x: np.ndarray, outputs: list[str]) -> Target:
    label = PEERS[name]["label"]
    json_type = {"Content-Type": "application/json"}
    if name == "mlserver":
        body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        return Target(label, port, "/v2/models/graph/infer", _dumps(body), json_type, _v2(outputs), key=name)
    nested = _dumps({"x": x.tolist()})
    if name == "bentoml":
        return Target(label, port, "/predict", nested, json_type, _side_by_side, key=name)
    return Target(label, port, "/predict", nested, json_type, _by_name(outputs), key=name)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _v1(tasks: list[str]) -> Parse:
    def parse(body: bytes, _headers: dict[str, str]) -> list[np.ndarray]:
        predictions = json.loads(body)["predictions"]
        return [np.asarray(predictions[t]["probabilities"], dtype=np.float32) for t in tasks]

    return parse


def _v2(outputs: list[str]) -> Parse:
    def parse(body: bytes, _headers: dict[str, str]) -> list[np.ndarray]:
        got = {
            o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"]) for o in json.loads(body)["outputs"]
        }
        return [got[n] for n in outputs]

    return parse


def _binary(body: bytes, headers: dict[str, str]) -> list[np.ndarray]:
    n = int(headers["inference-header-content-length"])
    arrays, offset = [], n
    for out in json.loads(body[:n])["outputs"]:
        size = out["parameters"]["binary_data_size"]
        arrays.append(np.frombuffer(body[offset : offset + size], dtype="<f4").reshape(out["shape"]))
        offset += size
    return arrays


def _by_name(outputs: list[str]) -> Parse:
    def parse(body: bytes, _headers: dict[str, str]) -> list[np.ndarray]:
        got = json.loads(body)
        return [np.asarray(got[n], dtype=np.float32) for n in outputs]

    return parse


def _side_by_side(body: bytes, _headers: dict[str, str]) -> list[np.ndarray]:
    return [np.asarray(json.loads(body), dtype=np.float32)]  # compared with the outputs concatenated


def _grpc_body(x: np.ndarray, outputs: list[str]) -> bytes:
    """A gRPC message frame (not compressed, 4-byte length) holding the ModelInferRequest."""
    from service.api.oip_grpc.protocol import protocol

    proto = protocol()
    request = proto.ModelInferRequest(
        model_name="bench",
        inputs=[proto.messages["ModelInferRequest.InferInputTensor"](name="x", datatype="FP32", shape=x.shape)],
        outputs=[proto.messages["ModelInferRequest.InferRequestedOutputTensor"](name=n) for n in outputs],
        raw_input_contents=[x.tobytes()],
    )
    message: bytes = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message
