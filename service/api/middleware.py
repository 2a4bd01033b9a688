"""The outermost layer of the app, outside the framework's own (pure ASGI, no per-request task or copy): a request
id, one structured log line and the HTTP metrics for every request (``service.main`` puts it there).

The request id is the client's ``X-Request-ID`` when it is a sane token (at most 128 of ``[A-Za-z0-9._-]``),
else a fresh one; it comes back in the response's ``X-Request-ID`` and in the log line. Routes are labelled by
their template (``/v2/models/{name}/infer``), so metrics and logs never grow one label per URL.

The prediction routes are answered here, by :mod:`service.api.fastpath`, without the framework's layers; every
other request goes on to FastAPI. OPTIONS, a method a path does not serve (405) and a body of the wrong media type
(415) are answered here too, for every route alike (:mod:`service.api.paths`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException

from service.api.paths import PathTable, media_problem

__all__ = ["HttpMetrics", "RequestMiddleware", "is_v2_path"]

log = logging.getLogger("kf.request")

# Request ids the server makes: a random per-process prefix and a counter (32 hex digits like a uuid4's, unique
# across processes and replicas, without uuid4's cost on every request).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def _new_id_prefix() -> None:  # a forked worker must not repeat its parent's ids
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_id_prefix)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


class HttpMetrics:
    """Request counts and latencies by method, route template and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter("kf_http_requests", "HTTP requests", labels, registry=registry)
        self.latency = Histogram(
            "kf_http_request_duration_seconds",
            "HTTP request latency",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)  # prometheus' labels() lookup is a lock and a hash per call; once here
        if children is None:
            values = (method, route, str(status))
            children = self._children[key] = (self.requests.labels(*values), self.latency.labels(*values))
        children[0].inc()
        children[1].observe(seconds)


class RequestMiddleware:
    """``fast``: a :class:`service.api.fastpath.FastPath` that serves its routes here, past the framework
    (``fast_path(app)`` builds it once the routes exist)."""

    def __init__(
        self, app: Any, *, metrics: HttpMetrics, max_body: int, fast_path: Any = None, paths: Any = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self._fast_path = fast_path
        self._fast: Any = None
        self._make_paths = paths  # () -> PathTable, built on the first request (the app's routes exist by then)
        self._paths: PathTable | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = content_type = length = None
        for name, value in scope["headers"]:  # one pass over the headers for everything this layer needs
            if name == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _REQUEST_ID.match(text) else None
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        request_id = request_id or f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        refusal = self._refusal(scope, content_type, length)
        if refusal is not None:
            status, message, error, headers = refusal
            await _reject(scope, send_with_id, message, status=status, error=error, headers=headers)
            self.metrics.observe(scope.get("method", ""), "unmatched", status, time.perf_counter() - started)
            return
        if not (content_type or b"").lower().startswith(b"multipart/"):
            # uploads stream to disk under their own limit, KF_MAX_UPLOAD_BYTES
            declared = int(length) if length is not None and length.isdigit() else None
            if declared is not None and declared > self.max_body:
                await _reject(scope, send_with_id, _too_large(self.max_body, f"{declared} bytes declared"))
                self.metrics.observe(scope.get("method", ""), "unmatched", 413, time.perf_counter() - started)
                return
            if declared is None:  # chunked: count as it streams (with a Content-Length the server delivers no more)
                receive = _limited(receive, self.max_body)
        if self._fast is None and self._fast_path is not None:
            self._fast = self._fast_path()
        matched = self._fast.match(scope) if self._fast is not None else None
        try:
            if matched is None:
                await self.app(scope, receive, send_with_id)
            else:
                scope["route"], handler, params = matched
                await handler(scope, receive, send_with_id, params)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.observe(method, route, status, seconds)
            if log.isEnabledFor(logging.INFO):
                principal = scope["state"].get("principal")
                fields = {
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(1000 * seconds, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                    "key": getattr(principal, "key_prefix", None),
                }
                log.info("%s %s %d", method, route, status, extra={"fields": fields})

    def _refusal(
        self, scope: dict[str, Any], content_type: bytes | None, length: bytes | None
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """(status, message, error name, headers) when the path and method alone answer the request: OPTIONS, a
        method the path does not serve (405), a body of a media type the operation does not take (415)."""
        if self._make_paths is None:
            return None
        if self._paths is None:
            self._paths = self._make_paths()
        path, method = scope["path"], scope["method"]
        allowed = self._paths.allowed(path)
        if allowed is None:
            return None  # not a route of the API (docs, the console): FastAPI answers
        if method == "OPTIONS" or method not in allowed:
            allow = [(b"allow", ", ".join(allowed).encode())]
            if method == "OPTIONS":
                return 204, "", "", allow
            message = f"{path} does not take {method}; it takes {', '.join(allowed)}"
            return 405, message, "MethodNotAllowed", allow
        accepted = self._paths.media_types(method, path)
        if content_type is None and length == b"0":
            return None  # no body at all: the route says what is missing
        problem = media_problem(accepted, content_type, v2=is_v2_path(path))
        if problem is not None:
            return 415, problem, "UnsupportedMediaError", []
        return None


def is_v2_path(path: str) -> bool:
    """A route of the Open Inference Protocol (``/v2``), whose errors have the shape ``{"error": "..."}``."""
    return path == "/v2" or path.startswith("/v2/")


def _limited(receive: Any, limit: int) -> Any:
    """``receive`` that stops a body without Content-Length (chunked) once it passes ``limit`` bytes, while it
    streams in: an HTTPException, which FastAPI passes through its body parsing as the 413 it is."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message: dict[str, Any] = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _too_large(limit, f"over {limit} bytes received"))
        return message

    return wrapped


async def _reject(
    scope: dict[str, Any],
    send: Any,
    message: str,
    *,
    status: int = 413,
    error: str = "PayloadTooLargeError",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An answer before the body is read (413, 415, 405; OPTIONS: 204 without a body), in the error shape of the
    API the path belongs to."""
    v2 = is_v2_path(scope.get("path", ""))
    body = b"" if status == 204 else orjson.dumps({"error": message} if v2 else {"detail": message, "error": error})
    head = [*(headers or ()), (b"content-length", str(len(body)).encode())]
    if body:
        head.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int, what: str) -> str:
    return (
        f"the request body is too large ({what}; the limit is {limit} bytes, KF_MAX_REQUEST_BYTES): send fewer "
        "samples per request, or base64 .npy inputs, which are about 4x smaller than JSON numbers"
    )
