"""The prediction routes as plain ASGI: ``POST /v1/predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``.

A profile of v2 JSON requests under load put about a third of the server's time in the framework rather than in
the request's own work: FastAPI's dependency resolution and request object, Starlette's exception and routing
layers, its ``Response`` header handling. :class:`FastPath` answers these three routes from
:class:`service.api.middleware.RequestMiddleware` instead, before any of that, and does the same things
the FastAPI routes do, in the same words:

- the API key check (``Authenticator.check``, the scope of the route template, as ``required_scope`` says);
- the body limit (``KF_MAX_REQUEST_BYTES``, enforced by the middleware as for every route);
- request id, metrics and the log line (the middleware's; the route template is the FastAPI route's);
- parsing (tensor arrays straight into numpy, see :mod:`service.serving.tensor_json`; large bodies off the loop)
  and the answer (bytes from orjson, sent as two ASGI messages);
- errors in each API's one shape (``service.main.error_content``), path parameters checked as the FastAPI
  routes declare them.

The FastAPI routes stay registered: they document the API (OpenAPI) and serve every other method.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from kf_core.errors import KfError
from service.api.auth import Authenticator, required_scope
from service.api.routes import OFF_LOOP_BYTES, parse_json, parse_tensor_json
from service.errors import InvalidInputError, ServiceError
from service.schemas import PredictRequest
from service.serving import v1, v2
from service.serving.runtime import Runtime

__all__ = ["FastPath"]

log = logging.getLogger(__name__)

ErrorContent = Callable[[str, Exception], tuple[int, dict[str, Any], dict[str, str] | None]]
Handler = Callable[[dict[str, Any], Any, Any, dict[str, str]], Awaitable[None]]

BINARY_HEADER = b"inference-header-content-length"
_JSON = [(b"content-type", b"application/json")]
_V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
_VERSION = re.compile(r"^[0-9]{1,9}$")
_MAX_NAME = 128
_TEMPLATES = ("/v1/predict", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


@dataclass(frozen=True)
class _Template:
    """``scope["route"]`` of a request served here: its template labels metrics and logs, as FastAPI's routes do."""

    path: str


def _routes(routes: Any) -> Iterator[tuple[str, set[str]]]:
    """(path template, methods) of every route, also inside included routers."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        elif getattr(r, "path", None) is not None:
            yield r.path, set(getattr(r, "methods", None) or ())


class FastPath:
    """Matches and serves the prediction routes; ``match`` is called by the middleware for every request."""

    def __init__(self, app: Any, error_content: ErrorContent) -> None:
        self._app = app
        self._error_content = error_content
        declared = {(path, m) for path, methods in _routes(app.routes) for m in methods}
        for path in _TEMPLATES:
            if (path, "POST") not in declared:  # the FastAPI routes document what this serves: keep them in step
                raise RuntimeError(f"the fast path serves POST {path}, but the app has no such route")
        self._route = {path: _Template(path) for path in _TEMPLATES}
        self._scopes = {path: required_scope("POST", path) for path in _TEMPLATES}

    def match(self, scope: dict[str, Any]) -> tuple[Any, Handler, dict[str, str]] | None:
        """(FastAPI route, handler, path parameters) when ``scope`` is a request this path serves."""
        if scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if path == "/v1/predict":
            return self._route[path], self._v1, {}
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            m = _V2_INFER.match(path)
            if m is not None:
                version = m.group("version")
                template = (
                    "/v2/models/{name}/infer" if version is None else "/v2/models/{name}/versions/{version}/infer"
                )
                return self._route[template], self._v2, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    # ----------------------------------------------------------------- the routes
    async def _v1(self, scope: dict[str, Any], receive: Any, send: Any, _params: dict[str, str]) -> None:
        async def answer() -> tuple[bytes, list[tuple[bytes, bytes]]]:
            raw = await self._prologue(scope, receive)
            body, array = await _parse(raw, PredictRequest, "inputs", _holds_inputs)
            return await v1.predict(self._runtime, body, array), _JSON

        await self._serve(scope, send, answer)

    async def _v2(self, scope: dict[str, Any], receive: Any, send: Any, params: dict[str, str]) -> None:
        async def answer() -> tuple[bytes, list[tuple[bytes, bytes]]]:
            raw = await self._prologue(scope, receive)
            ref = _model_ref(params)  # after the key check, as FastAPI orders them
            declared = _header(scope, BINARY_HEADER)
            runtime = self._runtime
            if declared is None:
                body, data = await _parse(raw, v2.InferRequest, "data", _holds_data)
                binary = b""
            else:
                text = declared.decode("latin-1")
                if not text.isdigit() or not 0 < int(text) <= len(raw):
                    raise InvalidInputError(
                        f"Inference-Header-Content-Length is {text!r}, but it must be the JSON header's length in "
                        f"bytes, at most the body's {len(raw)}"
                    )
                n = int(text)
                body, binary, data = parse_json(raw[:n], v2.InferRequest), raw[n:], None
            header, blobs = await v2.predict(runtime, await runtime.resolve(ref), body, binary, data)
            if not blobs:
                return header, _JSON
            headers = [(b"content-type", b"application/octet-stream"), (BINARY_HEADER, str(len(header)).encode())]
            return header + blobs, headers

        await self._serve(scope, send, answer)

    # ----------------------------------------------------------------- shared steps
    @property
    def _runtime(self) -> Runtime:
        runtime: Runtime = self._app.state.runtime
        return runtime

    async def _prologue(self, scope: dict[str, Any], receive: Any) -> bytes:
        """Check the API key (before the body is read), then read the body."""
        auth: Authenticator = self._app.state.auth
        principal = await auth.check(
            (_header(scope, b"authorization") or b"").decode("latin-1"), self._scopes[scope["route"].path]
        )
        if principal.key_prefix is not None:
            scope["state"]["principal"] = principal
        return await _body(receive)

    async def _serve(
        self, scope: dict[str, Any], send: Any, answer: Callable[[], Awaitable[tuple[bytes, list[tuple[bytes, bytes]]]]]
    ) -> None:
        try:
            body, headers = await answer()
            status = 200
        except (ServiceError, KfError, RequestValidationError) as exc:
            status, content, extra = self._error_content(scope["path"], exc)
            body = orjson.dumps(content)
            headers = [*_JSON, *((k.lower().encode(), v.encode()) for k, v in (extra or {}).items())]
        except HTTPException as exc:  # the middleware's limit on a body without Content-Length
            status, body, headers = exc.status_code, _http_error(scope["path"], exc.detail), _JSON
        except _Disconnected:
            return
        except Exception as exc:  # a bug: no framework layer is outside this one to answer it
            log.error("POST %s failed: %s", scope["path"], exc, exc_info=exc)
            status, body, headers = (
                500,
                _http_error(scope["path"], "internal error (see the server log)", status=500),
                _JSON,
            )
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


async def _body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _parse(raw: bytes, model: Any, key: str, holds: Any) -> tuple[Any, np.ndarray | None]:
    if len(raw) > OFF_LOOP_BYTES:
        return await run_in_threadpool(parse_tensor_json, raw, model, key, holds)
    return parse_tensor_json(raw, model, key, holds)


def _holds_inputs(body: PredictRequest) -> bool:
    return body.inputs == []


def _holds_data(body: v2.InferRequest) -> bool:
    return len(body.inputs) == 1 and body.inputs[0].data == []


def _model_ref(params: dict[str, str]) -> str:
    """The factor-set reference of the path, with the FastAPI routes' parameter checks and messages."""
    name, version = params["name"], params.get("version")
    problems: list[dict[str, Any]] = []
    if len(name) > _MAX_NAME:
        msg = f"String should have at most {_MAX_NAME} characters"
        problems.append({"loc": ("path", "name"), "msg": msg, "type": "string_too_long", "input": name})
    if version is not None and not _VERSION.match(version):
        msg = f"String should match pattern '{_VERSION.pattern}'"
        problems.append({"loc": ("path", "version"), "msg": msg, "type": "string_pattern_mismatch", "input": version})
    if problems:
        raise RequestValidationError(problems)
    return name if version is None else f"{name}:{int(version)}"


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _http_error(path: str, detail: str, *, status: int = 413) -> bytes:
    if path.startswith("/v2/"):
        return orjson.dumps({"error": detail})
    return orjson.dumps({"detail": detail, "error": "PayloadTooLargeError" if status == 413 else "InternalError"})
