"""The Open Inference Protocol over gRPC (KF_GRPC_PORT), called with tritonclient.grpc as Triton's users do.

The server is the API's own process (the app's lifespan starts it on a free port); answers are compared with the
HTTP v2 path and with the torch factor networks. Bad calls get the protocol's status codes with clear messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import open_client
from tests.service.serving import TASKS, Trained, register, train_small_factor_set

TOL = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_small_factor_set(tmp_path_factory.mktemp("factorized"))


@pytest.fixture
def registered(trained: Trained, session: Any, job: Any, factory: Any, store: Any) -> Any:
    return register(trained, session=session, job=job, factory=factory, store=store)


@pytest.fixture
def served(registered: Any, migrated: Any) -> Iterator[tuple[Any, Any, str]]:  # noqa: ARG001 (factor set first)
    """The HTTP test client and a tritonclient on the same app's gRPC port."""
    with open_client(migrated.model_copy(update={"grpc_port": 0}), run_jobs=False) as api:
        address = f"127.0.0.1:{api.app.state.grpc_port}"
        client = grpcclient.InferenceServerClient(address)
        try:
            yield api, client, address
        finally:
            client.close()


def _infer(client: Any, x: np.ndarray, outputs: list[str] | None, **kw: Any) -> Any:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32" if x.dtype == np.float32 else "INT32")
    tensor.set_data_from_numpy(x)
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs is not None else None
    return client.infer(kw.pop("model", "fs"), [tensor], outputs=requested, **kw)


def _code(exc: InferenceServerException) -> str:
    return str(exc.status()).removeprefix("StatusCode.")


def test_tritonclient_health_metadata_and_infer_match_the_http_path(served: Any, trained: Trained) -> None:
    api, client, _ = served
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fs") and client.is_model_ready("fs", "1")
    assert client.get_server_metadata().name == "kf-service"

    meta = client.get_model_metadata("fs")
    http_meta = api.get("/v2/models/fs").json()
    assert meta.name == "fs" and list(meta.versions) == ["1"] and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 1, 64, 64])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in http_meta["outputs"]
    ]

    names = ["logits_shape", "probs_shape", "label_shape", "logits_pos_y"]
    result = _infer(client, trained.x, names, request_id="r-7")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("fs", "1", "r-7")
    x = {"name": "x", "shape": list(trained.x.shape), "datatype": "FP32", "data": trained.x.ravel().tolist()}
    http = api.post("/v2/models/fs/infer", json={"inputs": [x], "outputs": [{"name": n} for n in names]}).json()
    assert [o.name for o in response.outputs] == names == [o["name"] for o in http["outputs"]]
    for out in http["outputs"]:
        got = result.as_numpy(out["name"])
        assert list(got.shape) == out["shape"]
        want = np.asarray(out["data"], dtype=got.dtype).reshape(out["shape"])
        # Both protocols run the same resident parts through the same batcher: the very same numbers.
        np.testing.assert_array_equal(got, want)
    logits = trained.logits()
    assert np.abs(result.as_numpy("logits_shape") - logits["shape"]).max() <= TOL
    assert result.as_numpy("label_shape").tolist() == logits["shape"].argmax(axis=1).tolist()


def test_no_requested_outputs_answers_every_task(served: Any, trained: Trained) -> None:
    _, client, _ = served
    result = _infer(client, trained.x[:1], None)
    names = [o.name for o in result.get_response().outputs]
    assert names == [f"{kind}_{t}" for t in TASKS for kind in ("logits", "probs", "label")]
    assert result.as_numpy("probs_scale").shape == (1, 6)


def test_typed_contents_in_typed_contents_out(served: Any, trained: Trained) -> None:
    """A client that sends fp32_contents (no raw bytes) gets typed contents back, with the same values."""
    from service.api.oip_grpc.protocol import protocol

    proto = protocol()
    _, client, address = served
    x = trained.x[:2]
    tensor = proto.messages["ModelInferRequest.InferInputTensor"](name="x", datatype="FP32", shape=x.shape)
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    output = proto.messages["ModelInferRequest.InferRequestedOutputTensor"]
    request = proto.ModelInferRequest(
        model_name="fs", inputs=[tensor], outputs=[output(name="logits_scale"), output(name="label_scale")]
    )
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=proto.ModelInferRequest.SerializeToString,
            response_deserializer=proto.ModelInferResponse.FromString,
        )
        response = call(request)
    assert not response.raw_output_contents
    logits = np.asarray(response.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(2, 6)
    raw = _infer(client, x, ["logits_scale"]).as_numpy("logits_scale")
    np.testing.assert_array_equal(logits, raw)
    assert list(response.outputs[1].contents.int64_contents) == logits.argmax(axis=1).tolist()


@pytest.mark.parametrize(
    ("call", "code", "words"),
    [
        (lambda c, x: _infer(c, x, ["logits_shape"], model="nope"), "NOT_FOUND", "nope"),
        (lambda c, x: _infer(c, x, ["logits_shape"], model_version="7"), "NOT_FOUND", "7"),
        (lambda c, x: _infer(c, x, ["logits_shape"], model_version="v1"), "INVALID_ARGUMENT", "version"),
        (lambda c, x: _infer(c, x, ["logits_colour"]), "INVALID_ARGUMENT", "no output 'logits_colour'"),
        (lambda c, x: _infer(c, x[:, :, :32], ["logits_shape"]), "INVALID_ARGUMENT", "shape"),
        (lambda c, x: _infer(c, x.astype(np.int32), ["logits_shape"]), "INVALID_ARGUMENT", "FP32"),
        (lambda c, _: c.get_model_metadata("nope"), "NOT_FOUND", "nope"),
        (lambda c, _: c.is_model_ready("fs", "x"), "INVALID_ARGUMENT", "version"),
    ],
    ids=["model", "version", "bad-version", "output", "shape", "datatype", "metadata", "ready"],
)
def test_bad_calls_get_the_protocol_codes_with_clear_messages(
    served: Any, trained: Trained, call: Any, code: str, words: str
) -> None:
    _, client, _ = served
    with pytest.raises(InferenceServerException) as info:
        call(client, trained.x[:1])
    assert _code(info.value) == code, info.value.message()
    assert words in info.value.message()


def test_api_keys_guard_grpc_like_http(registered: Any, migrated: Any, session: Any, trained: Trained) -> None:  # noqa: ARG001
    from service.catalog.keys import create_key

    _, key = create_key(session=session, scope="predict", name="app")
    session.commit()
    with open_client(migrated.model_copy(update={"grpc_port": 0}), run_jobs=False) as api:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{api.app.state.grpc_port}")
        try:
            assert client.is_server_live() and client.is_server_ready()  # open, as on HTTP
            for headers, words in ((None, "needs a key"), ({"authorization": "Bearer kf_nope"}, "not valid")):
                with pytest.raises(InferenceServerException) as info:
                    _infer(client, trained.x[:1], ["label_shape"], headers=headers)
                assert _code(info.value) == "UNAUTHENTICATED" and words in info.value.message()
            result = _infer(client, trained.x[:1], ["label_shape"], headers={"authorization": f"Bearer {key}"})
            assert result.as_numpy("label_shape").shape == (1,)
        finally:
            client.close()
        metrics = api.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text
    assert 'kf_grpc_requests_total{code="UNAUTHENTICATED",method="ModelInfer"} 2.0' in metrics
    assert 'kf_grpc_requests_total{code="OK",method="ModelInfer"} 1.0' in metrics


@pytest.mark.parametrize("request_id", ["", "r-9", "é" * 200])
def test_raw_responses_written_directly_parse_as_the_message_would(request_id: str) -> None:
    """ModelInfer answers raw requests with bytes it writes itself: they parse to the very message that
    encode_outputs builds (names, datatypes, shapes, id, tensor bytes), for any lengths and shapes."""
    from service.api.oip_grpc import tensors
    from service.api.oip_grpc.protocol import protocol

    rng = np.random.default_rng(3)
    arrays = [
        ("logits_shape", "FP32", rng.standard_normal((3, 200)).astype("<f4")),
        ("label_shape", "INT64", np.array([0, 199, 130], dtype="<i8")),
        ("probs_" + "t" * 300, "FP32", np.zeros((0, 5), dtype="<f4")),
        ("probs_pos_y", "FP32", rng.random((1, 32)).astype("<f4")),
    ]
    m = protocol()
    want = m.ModelInferResponse(model_name="fs" * 70, model_version="12", id=request_id)
    tensors.encode_outputs(want, arrays, raw=True)
    for _ in range(2):  # the second time from the cached tensor descriptions
        got = m.ModelInferResponse.FromString(tensors.raw_response("fs" * 70, "12", request_id, arrays))
        assert got == want
        assert [list(o.shape) for o in got.outputs] == [[3, 200], [3], [0, 5], [1, 32]]
        assert np.frombuffer(got.raw_output_contents[1], dtype="<i8").tolist() == [0, 199, 130]
