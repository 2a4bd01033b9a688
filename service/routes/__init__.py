"""HTTP routes, one module per resource. Each route parses input, calls one service function and returns a schema.

``documented(...)`` lists the error statuses a route can return, so OpenAPI documents every one of them.
"""

from __future__ import annotations

from typing import Any

from service.schemas import ErrorBody

__all__ = ["documented"]

_WHY = {
    404: "The resource in the path does not exist.",
    409: "The request conflicts with the catalog's state (duplicate name, job already finished).",
    413: "The upload exceeds KF_MAX_UPLOAD_BYTES.",
    415: "The request body is not multipart/form-data.",
    422: "The request is invalid; the message says which part and how to fix it.",
    500: "A stored artifact is missing or failed its sha256 check; it is not served.",
    503: "The job queue (Redis) is unreachable; nothing was queued.",
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the given error status codes, all with the :class:`ErrorBody` shape."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


def multipart_body(spec_schema: str, file_help: str) -> dict[str, Any]:
    """``openapi_extra`` for routes that stream a multipart upload themselves (FastAPI cannot infer the body)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "spec"],
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": file_help},
                            "spec": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "description": f"JSON object; see the {spec_schema} schema",
                            },
                        },
                    }
                }
            },
        }
    }
