"""KServe Open Inference Protocol v2 (REST): server and model health, metadata and inference.

Every factor set is a model named by its name (``/versions/{v}`` picks a version; the bare name is the latest).
Errors on these routes have the protocol's shape, ``{"error": "..."}`` (see ``service.main``).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep
from service.api.routes import json_body, parse_json, read_tensor_json
from service.catalog.db import reachable
from service.errors import InvalidInputError
from service.serving.refs import FactorSetInfo
from service.serving.runtime import Runtime
from service.serving.v2 import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    V2Error,
    combined_classes,
    model_metadata,
    predict,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

BINARY_HEADER = "Inference-Header-Content-Length"  # binary tensor extension: the JSON header's length

ModelName = Annotated[str, Path(min_length=1, max_length=128, description="factor set name")]
Version = Annotated[str, Path(pattern=r"^[0-9]{1,9}$", description="factor set version")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2Error, "description": "The request is invalid; the message says what to fix."},
    404: {"model": V2Error, "description": "No such model (factor set) or version."},
    500: {"model": V2Error, "description": "A stored model file failed its sha256 check; it is not served."},
}


def _infer_body() -> dict[str, Any]:
    """The request body: JSON, or with the binary tensor extension the JSON header (its length in
    ``Inference-Header-Content-Length``) followed by the tensors' raw bytes."""
    extra = json_body(InferRequest)
    extra["requestBody"]["content"]["application/octet-stream"] = {
        "schema": {"type": "string", "format": "binary"},
        "description": f"the JSON header, then raw little-endian tensor bytes; send {BINARY_HEADER}",
    }
    return extra


@router.get("", response_model=ServerMetadata, summary="Server metadata")
def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="kf-service", version=request.app.version, extensions=["binary_tensor_data"])


@router.get("/health/live", response_model=ServerLive, summary="Liveness (cheap: the process answers)")
def live() -> ServerLive:
    return ServerLive(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReady,
    summary="Readiness: catalog reachable and pinned assemblies warmed",
    responses={503: {"model": ServerReady, "description": "Not ready yet (or the catalog is unreachable)."}},
)
async def ready(request: Request, runtime: RuntimeDep) -> Any:
    ok = runtime.pins_ready and await run_in_threadpool(reachable, request.app.state.sessionmaker)
    if not ok:
        return JSONResponse(status_code=503, content={"ready": False})
    return ServerReady(ready=True)


@router.get("/models/{name}", response_model=ModelMetadata, summary="Model metadata", responses=_ERRORS)
async def metadata(name: ModelName, runtime: RuntimeDep) -> ModelMetadata:
    return _metadata(await runtime.resolve(name), runtime)


@router.get(
    "/models/{name}/versions/{version}", response_model=ModelMetadata, summary="Model metadata", responses=_ERRORS
)
async def metadata_version(name: ModelName, version: Version, runtime: RuntimeDep) -> ModelMetadata:
    return _metadata(await runtime.resolve(f"{name}:{int(version)}"), runtime)


@router.get("/models/{name}/ready", response_model=ModelReady, summary="Model readiness", responses=_ERRORS)
async def model_ready(name: ModelName, runtime: RuntimeDep) -> ModelReady:
    fs = await runtime.resolve(name)
    return ModelReady(name=fs.name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    summary="Model readiness",
    responses=_ERRORS,
)
async def model_version_ready(name: ModelName, version: Version, runtime: RuntimeDep) -> ModelReady:
    fs = await runtime.resolve(f"{name}:{int(version)}")
    return ModelReady(name=fs.name, ready=True)


@router.post(
    "/models/{name}/infer",
    response_class=Response,
    summary="Inference; the requested outputs select the tasks to assemble",
    responses={200: {"model": InferResponse, "description": "Output tensors."}, **_ERRORS},
    openapi_extra=_infer_body(),
)
async def infer(name: ModelName, request: Request, runtime: RuntimeDep) -> Response:
    body, binary, data = await _read(request)
    return await _infer(await runtime.resolve(name), body, binary, data, runtime)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_class=Response,
    summary="Inference on one version",
    responses={200: {"model": InferResponse, "description": "Output tensors."}, **_ERRORS},
    openapi_extra=_infer_body(),
)
async def infer_version(name: ModelName, version: Version, request: Request, runtime: RuntimeDep) -> Response:
    body, binary, data = await _read(request)
    return await _infer(await runtime.resolve(f"{name}:{int(version)}"), body, binary, data, runtime)


async def _read(request: Request) -> tuple[InferRequest, bytes, np.ndarray | None]:
    """The JSON header, the bytes that follow it with the binary tensor extension
    (``Inference-Header-Content-Length``), and the input's ``data`` when it was read straight into numpy."""
    declared = request.headers.get(BINARY_HEADER)
    if declared is None:
        body, data = await read_tensor_json(request, InferRequest, "data", _holds_data)
        return body, b"", data
    raw = await request.body()
    if not declared.isdigit() or not 0 < int(declared) <= len(raw):
        raise InvalidInputError(
            f"{BINARY_HEADER} is {declared!r}, but it must be the JSON header's length in bytes, at most the body's "
            f"{len(raw)}"
        )
    n = int(declared)
    return parse_json(raw[:n], InferRequest), raw[n:], None


def _holds_data(body: InferRequest) -> bool:
    return len(body.inputs) == 1 and body.inputs[0].data == []


async def _infer(
    fs: FactorSetInfo, body: InferRequest, binary: bytes, data: np.ndarray | None, runtime: Runtime
) -> Response:
    header, blobs = await predict(runtime, fs, body, binary, data)
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(header + blobs, media_type="application/octet-stream", headers={BINARY_HEADER: str(len(header))})


def _metadata(fs: FactorSetInfo, runtime: Runtime) -> ModelMetadata:
    return model_metadata(
        fs, provider=runtime.provider.name, device=runtime.provider.device, combined_classes=combined_classes(fs)
    )
