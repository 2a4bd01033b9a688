"""Validate Kubernetes manifests offline, strictly (unknown fields are errors), against Kubernetes' own schemas.

    python .ci/validate_manifests.py docker/k8s                   # exit 1 on the first file with an error
    python .ci/validate_manifests.py --expect-invalid FILE...     # exit 1 if any FILE validates (self-check)

Core kinds are checked with kubernetes-validate, which ships the OpenAPI-derived JSON schemas of every Kubernetes
release (nothing is downloaded). KServe's kinds (ServingRuntime, InferenceService) are custom resources whose
schemas are not part of Kubernetes: they are checked against the schema below, which spells out the KServe fields
our manifests may use (from KServe's API reference) and takes every embedded core type (containers, env,
resources, probes, tolerations, ...) from the same Kubernetes schemas. So a misspelt core field, a wrong type or
an unknown KServe field fails; what it cannot check is KServe's own validating webhook (run
`kubectl apply --dry-run=server` against a cluster with KServe installed for that).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

K8S_VERSION = "1.33.0"
_DEFS = "/api/_definitions.json#/$defs/"


def _core(name: str) -> dict[str, Any]:
    return {"$ref": _DEFS + name}


def _pod_fields(*names: str) -> dict[str, Any]:
    return {n: {"$ref": f"{_DEFS}io.k8s.api.core.v1.PodSpec/properties/{n}"} for n in names}


def _container_fields() -> dict[str, Any]:
    container = schema_contents(f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION)
    props = container["$defs"]["io.k8s.api.core.v1.Container"]["properties"]
    return {n: {"$ref": f"{_DEFS}io.k8s.api.core.v1.Container/properties/{n}"} for n in props}


_POD_LEVEL = (
    "affinity", "imagePullSecrets", "nodeSelector", "priorityClassName", "schedulerName", "securityContext",
    "serviceAccountName", "tolerations", "topologySpreadConstraints", "volumes", "initContainers",
    "terminationGracePeriodSeconds", "runtimeClassName", "hostIPC", "dnsPolicy",
)  # fmt: skip
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"$ref": _DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def _kserve_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    model_format = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
    }
    serving_runtime = {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
            "kind": {"const": "ServingRuntime"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["containers", "supportedModelFormats"],
                "properties": {
                    "supportedModelFormats": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "version": {"type": "string"},
                                "autoSelect": {"type": "boolean"},
                                "priority": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                    "protocolVersions": {
                        "type": "array",
                        "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                    },
                    "multiModel": {"type": "boolean"},
                    "disabled": {"type": "boolean"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "grpcEndpoint": {"type": "string"},
                    "grpcDataEndpoint": {"type": "string"},
                    "httpDataEndpoint": {"type": "string"},
                    "labels": _STRING_MAP,
                    "annotations": _STRING_MAP,
                    "containers": {"type": "array", "minItems": 1, "items": _core("io.k8s.api.core.v1.Container")},
                    **_pod_fields(*_POD_LEVEL),
                },
            },
        },
    }
    model = {
        "type": "object",
        "additionalProperties": False,
        "required": ["modelFormat"],
        "properties": {
            **_container_fields(),  # KServe inlines a core Container into the model spec
            "modelFormat": model_format,
            "runtime": {"type": "string"},
            "runtimeVersion": {"type": "string"},
            "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
            "storageUri": {"type": "string"},
        },
    }
    predictor = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "model": model,
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 0},
            "scaleTarget": {"type": "integer", "minimum": 1},
            "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
            "containerConcurrency": {"type": "integer", "minimum": 0},
            "timeout": {"type": "integer", "minimum": 0},
            "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
            "labels": _STRING_MAP,
            "annotations": _STRING_MAP,
            "deploymentStrategy": _core("io.k8s.api.apps.v1.DeploymentStrategy"),
            **_pod_fields(*_POD_LEVEL),
        },
    }
    inference_service = {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["predictor"],
                "properties": {"predictor": predictor},
            },
        },
    }
    return {
        ("serving.kserve.io/v1alpha1", "ServingRuntime"): serving_runtime,
        ("serving.kserve.io/v1beta1", "InferenceService"): inference_service,
    }


def _validate_custom(doc: dict[str, Any], schema: dict[str, Any]) -> None:
    defs = schema_contents(f"kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json", K8S_VERSION)
    registry: Registry = Resource.from_contents(defs) @ Registry()
    # Our "/api/_definitions.json#..." references resolve against the Kubernetes schemas' own base URI.
    rooted = {"$id": "https://kubernetes.io/api/kserve.json", **schema}
    jsonschema.validators.Draft202012Validator(rooted, registry=registry).validate(doc)


def validate_file(path: Path) -> list[str]:
    """Every problem in ``path`` (empty: valid). Each YAML document must be a resource with a known schema."""
    problems: list[str] = []
    custom = _kserve_schemas()
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        return [f"{path}: not YAML: {e}"]
    if not docs:
        return [f"{path}: no resources"]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            problems.append(f"{path}: a document without apiVersion and kind")
            continue
        name = f"{path}: {doc['kind']} {doc.get('metadata', {}).get('name', '?')}"
        try:
            schema = custom.get((doc["apiVersion"], doc["kind"]))
            if schema is not None:
                _validate_custom(doc, schema)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path)
            problems.append(f"{name}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{name}: no schema for this kind ({e})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="manifest files or directories of *.yaml")
    parser.add_argument("--expect-invalid", action="store_true", help="fail if any file validates")
    args = parser.parse_args()
    files = sorted(f for p in args.paths for f in ([p] if p.is_file() else p.glob("*.yaml")))
    if not files:
        print("no manifests found", file=sys.stderr)
        return 1
    failed = False
    for f in files:
        problems = validate_file(f)
        if args.expect_invalid:
            if not problems:
                print(f"{f}: validated, but it is broken on purpose: the validator misses something", file=sys.stderr)
                failed = True
            else:
                print(f"{f}: rejected as expected: {problems[0]}")
        elif problems:
            failed = True
            print("\n".join(problems), file=sys.stderr)
        else:
            print(f"{f}: valid (Kubernetes {K8S_VERSION}, strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
