"""The FastAPI application: ``create_app(settings=None)``.

The lifespan opens the catalog (refusing a schema behind the code), the artifact store and the job runner (RQ
when ``KF_REDIS_URL`` is set, else inline). Errors are mapped to HTTP status codes here and only here
(``_STATUS``): service and kf_core code raise plain exceptions that know nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from kf_core import errors as kf
from kf_core.errors import KfError
from service import errors
from service.api.auth import Authenticator, required_scope
from service.api.console import mount_console
from service.api.fastpath import FastPath
from service.api.links import add_links
from service.api.metrics import register_collectors
from service.api.middleware import HttpMetrics, RequestMiddleware, is_v2_path
from service.api.paths import PathTable
from service.api.routes import (
    artifacts,
    assemblies,
    body_schemas,
    datasets,
    factor_sets,
    gc,
    health,
    jobs,
    metrics,
    not_json,
    predict,
    teachers,
    v2,
    whoami,
)
from service.catalog.artifacts import open_store
from service.catalog.db import make_engine, make_sessionmaker
from service.catalog.migrate import check_schema
from service.config import Settings, get_settings
from service.jobs.runners import Runner, make_runner
from service.serving.runtime import Runtime

RunnerFactory = Callable[[Settings, sessionmaker[Session]], Runner]

__all__ = ["create_app", "error_content", "status_for"]

log = logging.getLogger(__name__)

# Most specific class first: the first isinstance match wins.
_STATUS: list[tuple[type[Exception], int]] = [
    (errors.UnauthorizedError, 401),
    (errors.ForbiddenError, 403),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.PayloadTooLargeError, 413),
    (errors.UnsupportedMediaError, 415),
    (errors.InvalidInputError, 422),
    (errors.QueueUnavailableError, 503),
    (errors.ArtifactStoreUnavailableError, 503),
    (errors.ArtifactError, 500),
    (errors.DeviceUnavailableError, 503),
]


def _kf_core_status() -> list[tuple[type[Exception], int]]:
    return [
        (kf.ExportMismatchError, 500),
        (kf.TrainingCancelled, 409),
        (kf.CheckpointError, 409),
        (kf.KfError, 422),  # config, unknown names, shapes, data and model files: all the caller's to fix
    ]


def status_for(exc: Exception) -> int:
    """The HTTP status of an exception raised while serving a request."""
    for cls, status in [*_STATUS, *_kf_core_status()]:
        if isinstance(exc, cls):
            return status
    return 500


def error_content(path: str, exc: Exception) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """(status, JSON body, headers) of the answer to a request for ``path`` that raised ``exc``: a service or
    kf_core error (mapped by ``status_for``) or a malformed request (``RequestValidationError``), in the one error
    shape of the API the path belongs to. Used by the exception handlers and by the prediction fast path."""
    if isinstance(exc, RequestValidationError):
        status, content, headers = _validation_content(path, exc)
        return status, _encodable(content), headers
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if is_v2_path(path):  # the Open Inference Protocol's error shape; its bad requests are 400s
        return (400 if status == 422 else status), _encodable({"error": str(exc)}), headers
    return status, _encodable({"detail": str(exc), "error": type(exc).__name__}), headers


def _encodable(value: Any) -> Any:
    """``value`` with every string UTF-8 encodable and every integer within 64 bits: messages quote what the
    client sent, which JSON lets it fill with lone surrogates ("\\udaef") and integers of any size."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, bool) or not isinstance(value, int | dict | list | tuple):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 64) else str(value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    return [_encodable(v) for v in value]


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    status, content, headers = error_content(request.url.path, exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse(status_code=status, content=content, headers=headers)


async def _authorize(request: Request) -> None:
    await request.app.state.auth.authorize(request)


def _validation_content(path: str, exc: RequestValidationError) -> tuple[int, dict[str, Any], None]:
    """Malformed requests, in each API's one error shape: /v1 ``{"detail": "...", "error": ..., "errors": [...]}``
    (a readable summary, plus FastAPI's itemised list), /v2 the protocol's ``{"error": "..."}`` with a 400."""
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()))
        problems.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    message = "invalid request: " + "; ".join(problems)
    if is_v2_path(path):
        return 400, {"error": message}, None
    # a body that is not UTF-8 comes back in "input" as bytes: shown as text, never a UnicodeDecodeError here
    itemised = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b[:200].decode("utf-8", "replace")})
    return 422, {"detail": message, "error": "RequestValidationError", "errors": itemised}, None


async def _handle_http(request: Request, exc: Exception) -> Response:
    """Starlette's answer to an ``HTTPException``, except FastAPI's bare 400 "There was an error parsing the body"
    (a JSON body it could not decode: not UTF-8, nested too deeply), which becomes the 422 saying what is wrong."""
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return await http_exception_handler(request, exc)
    if isinstance(cause, UnicodeDecodeError):
        why = not_json(bytes(cause.object), str(cause))
    elif isinstance(cause, RecursionError):
        why = "the body's JSON is nested too deeply; send a flatter JSON object"
    else:
        why = not_json(b"", f"{type(cause).__name__}: {cause}")
    problem = {"type": "json_invalid", "loc": ("body",), "msg": why, "input": None}
    status, content, _ = error_content(request.url.path, RequestValidationError([problem]))
    return JSONResponse(status_code=status, content=content)


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, content, _ = error_content(request.url.path, exc)
    return JSONResponse(status_code=status, content=content)


_WHY_422 = "The request is invalid; the message says which part and how to fix it."
_KEYS_DOC = (
    "API key from `kf keys create --scope predict|admin`. Not needed while the catalog holds no key (the server "
    "then listens on 127.0.0.1 only)."
)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the bodies routes parse themselves (``json_body``), less the 422 FastAPI adds to
    every route with parameters (/v2 answers those with 400), plus links between operations (``add_links``)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(body_schemas())
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer", "description": _KEYS_DOC}}
        for path, ops in schema["paths"].items():
            v2 = is_v2_path(path)
            error = {"$ref": "#/components/schemas/" + ("V2Error" if v2 else "ErrorBody")}
            for method, op in ops.items():
                if v2:
                    op["responses"].pop("422", None)
                elif "422" in op["responses"]:  # one error shape for every 422 (see _handle_validation)
                    op["responses"]["422"] = {
                        "description": _WHY_422,
                        "content": {"application/json": {"schema": error}},
                    }
                bodies = op.get("requestBody", {}).get("content", {})
                if "application/json" in bodies:
                    op["responses"]["413"] = {
                        "description": "The body exceeds KF_MAX_REQUEST_BYTES.",
                        "content": {"application/json": {"schema": error}},
                    }
                if bodies:  # service.api.paths refuses other media types for every route alike
                    op["responses"]["415"] = {
                        "description": f"The body's Content-Type is not {' or '.join(bodies)}.",
                        "content": {"application/json": {"schema": error}},
                    }
                scope = required_scope(method, path)
                if scope is None:
                    continue
                op["security"] = [{"apiKey": []}]
                codes = {"401": "No valid API key (none sent, unknown or revoked) while keys exist."}
                if scope == "admin":
                    codes["403"] = "The API key's scope is predict; this operation needs an admin key."
                for code, why in codes.items():
                    op["responses"][code] = {"description": why, "content": {"application/json": {"schema": error}}}
        add_links(schema)
        app.openapi_schema = schema
    return app.openapi_schema


class _Api(FastAPI):
    """FastAPI with :class:`RequestMiddleware` (``request_layer``) outside every layer of the framework's own stack
    (its error pages, telemetry and body limit, then the app's routes): the prediction routes it answers itself
    pass none of them (about 25 us a request, measured at the layer's entry with `wrk -c1`)."""

    request_layer: Callable[[ASGIApp], Any] | None = None  # the inner stack -> the app uvicorn calls

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return stack if self.request_layer is None else self.request_layer(stack)


def create_app(settings: Settings | None = None, *, runner: RunnerFactory = make_runner) -> FastAPI:
    """The API for ``settings`` (default: from the environment); ``runner`` builds the job runner (tests swap it)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        check_schema(engine)
        factory = make_sessionmaker(engine)
        app.state.settings = settings
        app.state.sessionmaker = factory
        app.state.store = open_store(settings)
        app.state.auth = Authenticator(factory)
        app.state.runtime = Runtime(settings, factory, app.state.store)  # fails here if KF_DEVICE=cuda lacks CUDA
        collectors = register_collectors(registry, app.state.runtime, factory, settings)
        app.state.runner = runner(settings, factory)
        app.state.runner.start()
        warm = asyncio.create_task(app.state.runtime.warm_pins())
        grpc_server = None
        if settings.grpc_port is not None:  # the Open Inference Protocol over gRPC, on the same runtime
            # Here, not at the top: grpc and the compiled protocol load only when KF_GRPC_PORT turns gRPC on.
            from service.api.oip_grpc.server import start_grpc

            grpc_server, app.state.grpc_port = await start_grpc(
                settings,
                runtime=app.state.runtime,
                auth=app.state.auth,
                factory=factory,
                registry=registry,
                version=app.version,
                status_for=status_for,
            )
        try:
            yield
        finally:
            warm.cancel()
            if grpc_server is not None:
                await grpc_server.stop(grace=1.0)
            for c in collectors:
                registry.unregister(c)
            app.state.runner.stop(terminate=True)
            app.state.runtime.close()
            engine.dispose()

    app = _Api(
        title="KF service",
        version="0.1.0",
        summary="Knowledge factorization as a service: factorize teachers into assemblable factor networks.",
        lifespan=lifespan,
        dependencies=[Depends(_authorize)],
    )
    registry = CollectorRegistry(auto_describe=False)
    app.state.metrics = registry
    http_metrics = HttpMetrics(registry)
    app.request_layer = lambda inner: RequestMiddleware(
        inner,
        metrics=http_metrics,
        max_body=settings.max_request_bytes,
        fast_path=lambda: FastPath(app, error_content),  # the prediction routes, served past the framework
        paths=lambda: PathTable(app.openapi()),  # OPTIONS, 405 and 415 for every route, from what OpenAPI says
    )
    app.add_exception_handler(errors.ServiceError, _handle)

    app.add_exception_handler(KfError, _handle)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    for module in (
        health,
        whoami,
        teachers,
        datasets,
        jobs,
        factor_sets,
        gc,
        artifacts,
        assemblies,
        predict,
        v2,
        metrics,
    ):
        app.include_router(module.router)
    mount_console(app)
    return app
