"""The prediction routes' plain-ASGI path (service.api.fastpath): the same checks, error shapes, request ids and
metrics as the FastAPI routes it stands in for (both databases)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

X = {"name": "x", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0.0, 1.0, 0.5, 0.25]}


def _count(client: Any, route: str, status: int) -> float:
    labels = {"method": "POST", "route": route, "status": str(status)}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == "kf_http_requests_total" and s.labels == labels:
                return float(s.value)
    return 0.0


def test_an_unknown_model_is_a_v2_404_with_id_and_template_metrics(client: Any) -> None:
    before = _count(client, "/v2/models/{name}/infer", 404)
    r = client.post("/v2/models/nosuch/infer", json={"inputs": [X]}, headers={"X-Request-ID": "req-42"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "req-42"
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and "nosuch" in body["error"]
    assert _count(client, "/v2/models/{name}/infer", 404) == before + 1


def test_path_parameters_are_checked_as_the_routes_declare_them(client: Any) -> None:
    r = client.post("/v2/models/" + "m" * 129 + "/infer", json={"inputs": [X]})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid request: path.name: String should have at most 128 characters"}
    r = client.post("/v2/models/fs/versions/v1/infer", json={"inputs": [X]})
    assert r.status_code == 400 and "path.version" in r.json()["error"]
    before = _count(client, "/v2/models/{name}/versions/{version}/infer", 404)
    r = client.post("/v2/models/nosuch/versions/3/infer", json={"inputs": [X]})
    assert r.status_code == 404 and set(r.json()) == {"error"}
    assert _count(client, "/v2/models/{name}/versions/{version}/infer", 404) == before + 1


def test_malformed_bodies_get_each_apis_error_shape(client: Any) -> None:
    r = client.post("/v2/models/fs/infer", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("invalid request: ")
    r = client.post("/v2/models/fs/infer", json={"inputs": [X], "surprise": 1})
    assert r.status_code == 400 and "surprise" in r.json()["error"]
    r = client.post("/v2/models/fs/infer", content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": "99"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]
    r = client.post("/v1/predict", json={"factor_set": "fs"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "RequestValidationError" and "inputs" in body["detail"] and body["errors"]
    r = client.post("/v1/predict", json={"factor_set": "nosuch", "inputs": [[[[0.0]]]]})
    assert r.status_code == 404 and r.json()["error"] == "NotFoundError" and "nosuch" in r.json()["detail"]


def test_other_methods_still_reach_the_framework(client: Any) -> None:
    assert client.get("/v2/models/fs/infer").status_code == 405
    assert client.get("/v1/predict").status_code == 405


def test_a_bug_on_the_fast_path_is_a_500_in_each_apis_shape_and_the_server_goes_on(
    client: Any, monkeypatch: Any, caplog: Any
) -> None:
    """No framework layer sits outside the fast path to turn an unexpected exception into an answer: it does."""

    async def broken(_ref: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.runtime, "resolve", broken)
    r = client.post("/v2/models/fs/infer", json={"inputs": [X]}, headers={"X-Request-ID": "req-bug"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-bug"
    assert r.json() == {"error": "internal error (see the server log)"}
    r = client.post("/v1/predict", json={"factor_set": "fs", "inputs": [[[[0.0]]]]})
    assert r.status_code == 500 and r.json()["error"] == "InternalError"
    assert "a bug" in caplog.text and "/v2/models/fs/infer" in caplog.text
    monkeypatch.undo()
    assert client.post("/v2/models/nosuch/infer", json={"inputs": [X]}).status_code == 404
