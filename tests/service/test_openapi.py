"""The OpenAPI document lists every route with every status code it can return (the test client also checks
each response a test receives against it, see ``tests/conftest.py``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from service.main import create_app, status_for
from tests.conftest import assert_documented

EXPECTED = {
    ("post", "/v1/teachers"): {"201", "401", "403", "409", "413", "415", "422"},
    ("get", "/v1/teachers"): {"200", "401", "422"},
    ("get", "/v1/teachers/{teacher_id}"): {"200", "401", "404", "422"},
    ("delete", "/v1/teachers/{teacher_id}"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/datasets"): {"201", "401", "403", "409", "413", "415", "422"},
    ("get", "/v1/datasets"): {"200", "401", "422"},
    ("get", "/v1/datasets/{dataset_id}"): {"200", "401", "404", "422"},
    ("delete", "/v1/datasets/{dataset_id}"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/jobs"): {"202", "401", "403", "413", "415", "422", "503"},
    ("get", "/v1/jobs"): {"200", "401", "422"},
    ("get", "/v1/jobs/{job_id}"): {"200", "401", "404", "422"},
    ("post", "/v1/jobs/{job_id}/cancel"): {"200", "401", "403", "404", "409", "422"},
    ("get", "/v1/jobs/{job_id}/events"): {"200", "401", "404", "422"},
    ("get", "/v1/factor-sets"): {"200", "401", "422"},
    ("get", "/v1/factor-sets/{ref}"): {"200", "401", "404", "422"},
    ("delete", "/v1/factor-sets/{ref}"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/gc"): {"200", "401", "403", "422"},
    ("get", "/v1/factor-sets/{ref}/samples"): {"200", "401", "404", "422", "500"},
    ("get", "/v1/factor-sets/{name}/aliases"): {"200", "401", "404", "422"},
    ("put", "/v1/factor-sets/{name}/aliases/{alias}"): {"200", "401", "403", "404", "413", "415", "422"},
    ("delete", "/v1/factor-sets/{name}/aliases/{alias}"): {"200", "401", "403", "404", "422"},
    ("post", "/v1/factor-sets/import"): {"201", "401", "403", "404", "409", "413", "415", "422"},
    ("post", "/v1/factor-sets/{ref}/tasks"): {"202", "401", "403", "404", "413", "415", "422", "503"},
    ("post", "/v1/factor-sets/{ref}/remove-tasks"): {"201", "401", "403", "404", "409", "413", "415", "422"},
    ("get", "/v1/artifacts/{sha256}"): {"200", "401", "404", "422", "500"},
    ("get", "/v1/health"): {"200"},
    ("get", "/v1/whoami"): {"200", "401"},
    ("post", "/v1/assemblies"): {"200", "401", "404", "413", "415", "422", "500"},
    ("get", "/v1/assemblies/{assembly_id}"): {"200", "401", "404", "422", "500"},
    ("get", "/v1/assemblies/{assembly_id}/onnx"): {"200", "401", "404", "422", "500"},
    ("post", "/v1/predict"): {"200", "401", "404", "413", "415", "422", "500"},
    ("get", "/metrics"): {"200"},
    ("get", "/v2"): {"200"},
    ("get", "/v2/health/live"): {"200"},
    ("get", "/v2/health/ready"): {"200", "503"},
    ("get", "/v2/models/{name}"): {"200", "400", "401", "404", "500"},
    ("get", "/v2/models/{name}/versions/{version}"): {"200", "400", "401", "404", "500"},
    ("get", "/v2/models/{name}/ready"): {"200", "400", "401", "404", "500"},
    ("get", "/v2/models/{name}/versions/{version}/ready"): {"200", "400", "401", "404", "500"},
    ("post", "/v2/models/{name}/infer"): {"200", "400", "401", "404", "413", "415", "500"},
    ("post", "/v2/models/{name}/versions/{version}/infer"): {"200", "400", "401", "404", "413", "415", "500"},
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app().openapi()


def test_every_route_documents_exactly_its_status_codes(spec: dict[str, Any]) -> None:
    found = {(m, p): set(op["responses"]) for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert found == EXPECTED


def test_error_responses_have_the_error_body_shape(spec: dict[str, Any]) -> None:
    body = spec["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) == {"detail", "error"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and code != "422":  # FastAPI's own 422 schema for bad parameters
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    # /v2 follows the Open Inference Protocol: {"error": "..."}; readiness answers {"ready": false}
                    shape = (
                        "/ServerReady"
                        if path == "/v2/health/ready"
                        else "/V2Error"
                        if path.startswith("/v2")
                        else "/ErrorBody"
                    )
                    assert ref.endswith(shape), (method, path, code)


def test_lists_are_paginated_and_uploads_document_their_multipart_body(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for path in ("/v1/teachers", "/v1/datasets", "/v1/jobs", "/v1/factor-sets"):
        op = spec["paths"][path]["get"]
        params = {p["name"]: p["schema"] for p in op["parameters"]}
        assert params["limit"]["maximum"] == 200 and params["offset"]["minimum"] == 0
        page = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert set(schemas[page]["properties"]) == {"data", "count"}
    for path in ("/v1/teachers", "/v1/datasets"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(body["required"]) == {"file", "spec"}


def test_the_response_check_fails_on_an_undocumented_status() -> None:
    app = create_app()
    request = SimpleNamespace(url=SimpleNamespace(path="/v1/health"), method="GET")
    assert_documented(app, SimpleNamespace(request=request, status_code=200))
    with pytest.raises(AssertionError, match="answered 404"):
        assert_documented(app, SimpleNamespace(request=request, status_code=404))


def test_errors_map_to_statuses_in_one_place() -> None:
    from kf_core import errors as kf
    from service import errors

    assert status_for(errors.NotFoundError("job", 1)) == 404
    assert status_for(errors.ArtifactCorruptError("x")) == 500
    assert status_for(kf.UnknownTaskError("task", "x", ["a"])) == 422
    assert status_for(kf.ExportMismatchError("x")) == 500
    assert status_for(RuntimeError("bug")) == 500


def test_the_document_states_the_constraints_the_server_enforces(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["AssemblyCreate"]["properties"]["tasks"]["minItems"] == 1
    assert schemas["PredictRequest"]["properties"]["tasks"]["minItems"] == 1
    assert schemas["JobCreate"]["properties"]["tasks"]["minItems"] == 1
    assert {tuple(branch["required"]) for branch in schemas["JobCreate"]["oneOf"]} == {("dataset",), ("dataset_id",)}
    assert len(schemas["FactorSetExtend"]["not"]["allOf"]) == 2  # at most one of dataset, dataset_id
    inputs = schemas["PredictRequest"]["properties"]["inputs"]["anyOf"]
    assert {"type": "array", "minItems": 1} in inputs and {"type": "string", "minLength": 1} in inputs
    assert schemas["InferRequest"]["properties"]["inputs"]["maxItems"] == 1
    for path in ("/v1/teachers", "/v1/datasets", "/v1/factor-sets/import"):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert form["file"]["minLength"] == 1 and form["spec"]["minLength"] >= 2, path
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert set(infer) == {"application/json", "application/octet-stream"}  # the binary tensor extension


def test_artifact_downloads_document_every_media_type_an_artifact_is_stored_with(spec: dict[str, Any]) -> None:
    from service.api.routes.artifacts import MEDIA_TYPES
    from service.catalog import checkpoints, teachers
    from service.jobs import register

    stored = {*teachers._MEDIA.values(), checkpoints.CHECKPOINT, register.ONNX, register.JSON, "application/x-npz"}
    assert stored == set(MEDIA_TYPES)
    documented = spec["paths"]["/v1/artifacts/{sha256}"]["get"]["responses"]["200"]["content"]
    assert set(documented) == stored
    onnx = spec["paths"]["/v1/assemblies/{assembly_id}/onnx"]["get"]["responses"]["200"]["content"]
    assert set(onnx) == {"application/onnx"}


def test_links_name_operations_and_parameters_that_exist(spec: dict[str, Any]) -> None:
    operations = {op["operationId"]: op for ops in spec["paths"].values() for op in ops.values()}
    count = 0
    for ops in spec["paths"].values():
        for op in ops.values():
            for response in op["responses"].values():
                for link in response.get("links", {}).values():
                    target = operations[link["operationId"]]
                    names = {p["name"] for p in target.get("parameters", ()) if p["in"] == "path"}
                    assert set(link["parameters"]) == names, link
                    assert all(v.startswith("$response.body#/") for v in link["parameters"].values()), link
                    count += 1
    assert count >= 25
    created = spec["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    assert any(link["parameters"] == {"job_id": "$response.body#/id"} for link in created.values())
