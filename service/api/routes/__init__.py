"""HTTP routes, one module per resource. Each route parses input, calls one service function and returns a schema.

``documented(...)`` lists the error statuses a route can return, so OpenAPI documents every one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.schemas import ErrorBody
from service.serving.tensor_json import parse_array, split_array

__all__ = ["body_schemas", "documented", "json_body", "not_json", "parse_json", "read_json", "read_tensor_json"]

OFF_LOOP_BYTES = 256 << 10  # bodies past this size are parsed in a worker thread, so the event loop keeps serving

_M = TypeVar("_M", bound=BaseModel)
_BODY_MODELS: dict[str, type[BaseModel]] = {}

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
                            "file": {"type": "string", "format": "binary", "minLength": 1, "description": file_help},
                            "spec": {
                                "type": "string",
                                "minLength": 2,
                                "contentMediaType": "application/json",
                                "description": f"JSON object; see the {spec_schema} schema",
                            },
                        },
                    }
                }
            },
        }
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route parses itself with :func:`read_json`."""
    _BODY_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def body_schemas() -> dict[str, Any]:
    """Component schemas of the models registered with :func:`json_body` (merged into OpenAPI by the app)."""
    out: dict[str, Any] = {}
    for name, model in _BODY_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return out


async def read_json(request: Request, model: type[_M]) -> _M:
    """The body parsed and validated in one pass by pydantic's JSON parser (about twice as fast as json.loads
    followed by validation, which matters for prediction batches); errors are FastAPI's usual 422."""
    return parse_json(await request.body(), model)


def parse_json(raw: bytes, model: type[_M]) -> _M:
    """``raw`` parsed and validated as ``model``; errors are FastAPI's usual 422 (400 on /v2)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        if errors and errors[0]["type"] == "json_invalid":
            errors = [{**errors[0], "msg": not_json(raw, str(errors[0]["msg"]))}]
        raise RequestValidationError(errors, body=raw[:1000]) from None


def not_json(raw: bytes, why: str) -> str:
    """What is wrong with a body that does not parse as JSON, in words that say what to send instead."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return (
            f"the body is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} cannot start or continue a "
            "UTF-8 character; send JSON encoded as UTF-8"
        )
    return f"the body is not valid JSON ({why}); send a JSON object"


async def read_tensor_json(
    request: Request, model: type[_M], key: str, holds: Callable[[_M], bool]
) -> tuple[_M, np.ndarray | None]:
    """The body as ``model``, with its numeric array under ``key`` read straight into a float32 array when it can
    be (:mod:`service.serving.tensor_json`; ``None`` otherwise: the values stay in the model). ``holds(parsed)`` says
    whether the emptied array really is the tensor's (and not a same-named key elsewhere)."""
    raw = await request.body()
    if len(raw) > OFF_LOOP_BYTES:
        return await run_in_threadpool(parse_tensor_json, raw, model, key, holds)
    return parse_tensor_json(raw, model, key, holds)


def parse_tensor_json(
    raw: bytes, model: type[_M], key: str, holds: Callable[[_M], bool]
) -> tuple[_M, np.ndarray | None]:
    split = split_array(raw, key)
    if split is not None:
        array = parse_array(split[1])
        if array is not None:
            parsed = _parse_rest(split[0], model)
            if holds(parsed):
                return parsed, array
    return parse_json(raw, model), None


_RESTS: dict[tuple[type[BaseModel], bytes], BaseModel] = {}
_RESTS_MAX, _REST_BYTES = 512, 2048


def _parse_rest(rest: bytes, model: type[_M]) -> _M:
    """:func:`parse_json` of a body whose tensor was cut out, remembered by its bytes: a client sends the same rest
    (input name, shape, outputs) with every request, and validating it again costs more than the lookup (about
    50 us of a batch-1 request on 2 cores, right after a run has evicted the validator from the caches). Only
    valid bodies are remembered; the parsed request is shared between requests, so nothing may change it (no
    route does: they read it)."""
    if len(rest) > _REST_BYTES:
        return parse_json(rest, model)
    key = (model, rest)
    hit = _RESTS.get(key)
    if hit is None:
        hit = parse_json(rest, model)
        if len(_RESTS) >= _RESTS_MAX:
            _RESTS.clear()
        _RESTS[key] = hit
    return hit  # type: ignore[return-value]
