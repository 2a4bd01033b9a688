"""OpenAPI links: how the answer of one operation addresses others (the teacher a POST created, the job it
queued, the factor set it registered). Clients and stateful testers (schemathesis) follow them to chain calls.

Each entry: (method, path, status) of the source operation -> target (method, path) -> parameters, each a runtime
expression on the source's response (``$response.body#/id``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_links"]

_ID = "$response.body#/id"
_TEACHER = {("get", "/v1/teachers/{teacher_id}"): {"teacher_id": _ID}}
_DATASET = {("get", "/v1/datasets/{dataset_id}"): {"dataset_id": _ID}}
_JOB = {
    ("get", "/v1/jobs/{job_id}"): {"job_id": _ID},
    ("get", "/v1/jobs/{job_id}/events"): {"job_id": _ID},
    ("post", "/v1/jobs/{job_id}/cancel"): {"job_id": _ID},
    ("get", "/v1/teachers/{teacher_id}"): {"teacher_id": "$response.body#/teacher_id"},
}
_FACTOR_SET = {
    ("get", "/v1/factor-sets/{ref}"): {"ref": _ID},
    ("get", "/v1/factor-sets/{ref}/samples"): {"ref": _ID},
    ("get", "/v1/factor-sets/{name}/aliases"): {"name": "$response.body#/name"},
    ("get", "/v2/models/{name}"): {"name": "$response.body#/name"},
    ("get", "/v2/models/{name}/ready"): {"name": "$response.body#/name"},
    ("get", "/v1/artifacts/{sha256}"): {"sha256": "$response.body#/ckn_artifact/sha256"},
}
_ASSEMBLY = {
    ("get", "/v1/assemblies/{assembly_id}"): {"assembly_id": _ID},
    ("get", "/v1/assemblies/{assembly_id}/onnx"): {"assembly_id": _ID},
}

LINKS: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, str]]] = {
    ("post", "/v1/teachers", "201"): {
        **_TEACHER,
        ("delete", "/v1/teachers/{teacher_id}"): {"teacher_id": _ID},
        ("get", "/v1/artifacts/{sha256}"): {"sha256": "$response.body#/artifact/sha256"},
    },
    ("get", "/v1/teachers/{teacher_id}", "200"): {
        ("get", "/v1/artifacts/{sha256}"): {"sha256": "$response.body#/artifact/sha256"},
    },
    ("post", "/v1/datasets", "201"): {
        **_DATASET,
        ("delete", "/v1/datasets/{dataset_id}"): {"dataset_id": _ID},
        ("get", "/v1/artifacts/{sha256}"): {"sha256": "$response.body#/artifact/sha256"},
    },
    ("post", "/v1/jobs", "202"): _JOB,
    ("post", "/v1/factor-sets/{ref}/tasks", "202"): _JOB,
    ("get", "/v1/factor-sets/{ref}", "200"): _FACTOR_SET,
    ("post", "/v1/factor-sets/import", "201"): _FACTOR_SET,
    ("post", "/v1/factor-sets/{ref}/remove-tasks", "201"): {
        **_FACTOR_SET,
        ("delete", "/v1/factor-sets/{ref}"): {"ref": _ID},
    },
    ("put", "/v1/factor-sets/{name}/aliases/{alias}", "200"): {
        ("get", "/v1/factor-sets/{ref}"): {"ref": "$response.body#/ref"},
        ("get", "/v1/factor-sets/{name}/aliases"): {"name": "$response.body#/name"},
        ("delete", "/v1/factor-sets/{name}/aliases/{alias}"): {
            "name": "$response.body#/name",
            "alias": "$response.body#/alias",
        },
    },
    ("post", "/v1/assemblies", "200"): _ASSEMBLY,
}


def add_links(schema: dict[str, Any]) -> None:
    """Add :data:`LINKS` to the responses of ``schema`` (an OpenAPI document), naming targets by operationId."""
    paths = schema["paths"]
    for (method, path, status), targets in LINKS.items():
        response = paths[path][method]["responses"][status]
        links = response.setdefault("links", {})
        for (target_method, target_path), parameters in targets.items():
            op_id = paths[target_path][target_method]["operationId"]
            links[op_id] = {"operationId": op_id, "parameters": dict(parameters)}
