"""The outermost layer of the app (pure ASGI, no per-request task or copy): a request id, one structured log
line and the HTTP metrics for every request.

The request id is the client's ``X-Request-ID`` when it is a sane token (at most 128 of ``[A-Za-z0-9._-]``),
else a fresh one; it comes back in the response's ``X-Request-ID`` and in the log line. Routes are labelled by
their template (``/v2/models/{name}/infer``), so metrics and logs never grow one label per URL.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["HttpMetrics", "RequestMiddleware"]

log = logging.getLogger("kf.request")

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

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        values = (method, route, str(status))
        self.requests.labels(*values).inc()
        self.latency.labels(*values).observe(seconds)


class RequestMiddleware:
    def __init__(self, app: Any, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.observe(method, route, status, seconds)
            principal = scope.get("state", {}).get("principal")
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


def _incoming_id(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None
