"""The gRPC server: ``GRPCInferenceService`` on ``KF_GRPC_PORT``, in the API's process and event loop.

Calls share everything with the HTTP API: the runtime (resident factor sets, their ONNX Runtime sessions and
batchers, so HTTP and gRPC requests for one factor set land in the same batches and get the same numbers), the
API keys (metadata ``authorization: Bearer <key>``; liveness, readiness and server metadata stay open, as on
HTTP), the errors (each service error's HTTP status, from ``service.main``, becomes its gRPC code; the message
is the same) and the metrics registry (``kf_grpc_requests`` and ``kf_grpc_request_duration_seconds`` by method
and code).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.orm import Session, sessionmaker

from kf_core.errors import KfError
from service.api.auth import Authenticator
from service.api.oip_grpc import tensors
from service.api.oip_grpc.protocol import SERVICE, protocol
from service.catalog.db import reachable
from service.config import Settings
from service.errors import InvalidInputError, ServiceError
from service.serving.runtime import Runtime
from service.serving.v2 import combined_classes, model_metadata, output_arrays, requested_tasks

__all__ = ["GrpcMetrics", "start_grpc"]

log = logging.getLogger(__name__)

StatusFor = Callable[[Exception], int]

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
_OPEN = frozenset({"ServerLive", "ServerReady", "ServerMetadata"})  # like /v2/health/* and /v2 over HTTP
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


class GrpcMetrics:
    """Call counts and latencies by method and gRPC status code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "code")
        self.calls = Counter("kf_grpc_requests", "gRPC calls", labels, registry=registry)
        self.latency = Histogram(
            "kf_grpc_request_duration_seconds", "gRPC call latency", labels, buckets=_LATENCY_BUCKETS, registry=registry
        )
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}  # labels() looked up once

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (
                self.calls.labels(method, code.name),
                self.latency.labels(method, code.name),
            )
        children[0].inc()
        children[1].observe(seconds)


class _Service:
    """The protocol's six calls, each taking a request message and returning a response message."""

    def __init__(self, runtime: Runtime, factory: sessionmaker[Session], version: str) -> None:
        self._runtime = runtime
        self._factory = factory
        self._version = version
        self._m = protocol()
        self._infer_response = self._m.ModelInferResponse

    async def ServerLive(self, _request: Any) -> Any:
        return self._m.ServerLiveResponse(live=True)

    async def ServerReady(self, _request: Any) -> Any:
        ready = self._runtime.pins_ready and await asyncio.to_thread(reachable, self._factory)
        return self._m.ServerReadyResponse(ready=ready)

    async def ServerMetadata(self, _request: Any) -> Any:
        return self._m.ServerMetadataResponse(name="kf-service", version=self._version, extensions=[])

    async def ModelReady(self, request: Any) -> Any:
        await self._runtime.resolve(_ref(request.name, request.version))
        return self._m.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any) -> Any:
        fs = await self._runtime.resolve(_ref(request.name, request.version))
        provider = self._runtime.provider
        meta = model_metadata(fs, provider=provider.name, device=provider.device, combined_classes=combined_classes(fs))
        tensor = self._m.messages["ModelMetadataResponse.TensorMetadata"]
        return self._m.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def ModelInfer(self, request: Any) -> Any:
        runtime = self._runtime
        fs = await runtime.resolve(_ref(request.model_name, request.model_version))
        tasks, combined, names = requested_tasks(fs, [o.name for o in request.outputs])
        resident, route = await runtime.route(fs, tasks, combined=combined)  # the resident parts, as over HTTP
        x = tensors.decode_input(request, input_name=route.input_name, input_shape=route.input_shape)
        outputs = await runtime.run(resident, route, runtime.check_batch(x, route))
        arrays = output_arrays(route, outputs, names)
        if request.raw_input_contents:  # already serialized (the handler's serializer passes bytes through)
            return tensors.raw_response(fs.name, str(fs.version), request.id, arrays)
        response = self._infer_response(model_name=fs.name, model_version=str(fs.version), id=request.id)
        tensors.encode_outputs(response, arrays, raw=False)
        return response


def _ref(name: str, version: str) -> str:
    """The factor-set reference of a model name and (optional) version, as the HTTP routes build it."""
    if not 0 < len(name) <= 128:
        raise InvalidInputError("the model name must be 1 to 128 characters: a factor set's name")
    if not version:
        return name
    if not version.isdigit() or len(version) > 9:
        raise InvalidInputError(f"model version {version!r} is not a version number; send digits, or none for latest")
    return f"{name}:{int(version)}"


def _handlers(
    service: _Service, auth: Authenticator, metrics: GrpcMetrics, status_for: StatusFor
) -> grpc.GenericRpcHandler:
    def wrap(method: str, call: Callable[[Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        scope = None if method in _OPEN else "predict"

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                try:
                    if scope is not None:
                        await auth.check(_metadata(context, "authorization"), scope)
                    return await call(request)
                except Exception as exc:
                    status = status_for(exc)
                    code = _CODES.get(status, grpc.StatusCode.INTERNAL)
                    message = (
                        str(exc) if isinstance(exc, ServiceError | KfError) else "internal error (see the server log)"
                    )
                    if code == grpc.StatusCode.INTERNAL:
                        log.error("gRPC %s failed: %s", method, exc, exc_info=exc)
                    await context.abort(code, message)
            finally:
                metrics.observe(method, code, time.perf_counter() - started)

        return handle

    proto = protocol()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            wrap(name, getattr(service, name)),
            request_deserializer=request_cls.FromString,
            response_serializer=_serializer(response_cls),
        )
        for name, (request_cls, response_cls) in proto.methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _serializer(response_cls: Any) -> Callable[[Any], bytes]:
    """The response message's ``SerializeToString``; a response already serialized passes as it is."""
    serialize = response_cls.SerializeToString

    def serializer(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return serializer


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return ""


async def start_grpc(
    settings: Settings,
    *,
    runtime: Runtime,
    auth: Authenticator,
    factory: sessionmaker[Session],
    registry: CollectorRegistry,
    version: str,
    status_for: StatusFor,
) -> tuple[grpc.aio.Server, int]:
    """Start the server on ``KF_GRPC_HOST:KF_GRPC_PORT`` (port 0: any free one); returns it and its port."""
    assert settings.grpc_port is not None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    service = _Service(runtime, factory, version)
    server.add_generic_rpc_handlers((_handlers(service, auth, GrpcMetrics(registry), status_for),))
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC cannot listen on {address} (KF_GRPC_HOST, KF_GRPC_PORT): {exc}") from None
    await server.start()
    log.info("gRPC (Open Inference Protocol) listening on %s:%d", settings.grpc_host, port)
    return server, port
