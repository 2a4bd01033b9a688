"""Streaming multipart uploads: one file part goes straight into the artifact store's temp area, hashed as it
arrives, and the size limit is enforced on the bytes received (not on a header a client could fake).

Starlette's ``request.form()`` would first spool the whole body to a temporary file with no size limit; this
reads ``request.stream()`` through python-multipart's push parser instead. Nothing reaches the store unless the
caller validates the file and calls ``upload.file.commit()``; on any error the temp file is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from service.catalog.artifacts import ArtifactStore, ArtifactWriter
from service.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError

__all__ = ["Upload", "parse_spec", "read_upload", "receive_upload"]

_Spec = TypeVar("_Spec", bound=BaseModel)
_Row = TypeVar("_Row")

_FIELD_LIMIT = 1 << 20  # a JSON spec is small; the limit stops a client streaming gigabytes into memory
_MAX_PARTS = 8


@dataclass
class Upload:
    """The form's text fields and its one file (an uncommitted artifact writer)."""

    fields: dict[str, str]
    file: ArtifactWriter
    filename: str


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    headers: dict[bytes, bytes] = field(default_factory=dict)


async def read_upload(
    request: Request, *, store: ArtifactStore, max_bytes: int, file_field: str = "file", suffix: str = ""
) -> Upload:
    """Parse a ``multipart/form-data`` request holding the file part ``file_field`` and small text fields."""
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in options:
        raise UnsupportedMediaError(
            f"send multipart/form-data with a '{file_field}' file part and a 'spec' JSON part "
            f"(got content type {ctype.decode('latin-1') or 'none'!r})"
        )
    body_limit = max_bytes + _FIELD_LIMIT * _MAX_PARTS
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise PayloadTooLargeError(
            f"the request is {declared} bytes; uploads are limited to {max_bytes} bytes (KF_MAX_UPLOAD_BYTES)"
        )

    state: dict[str, Any] = {"part": None, "header_field": b"", "header_value": b"", "parts": 0}
    fields: dict[str, str] = {}
    writer: ArtifactWriter | None = None
    filename = ""
    errors: list[Exception] = []

    def on_part_begin() -> None:
        state["part"] = _Part()
        state["parts"] += 1
        if state["parts"] > _MAX_PARTS:
            errors.append(InvalidInputError(f"too many form parts; send only '{file_field}' and 'spec'"))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["part"].headers[state["header_field"].lower()] = state["header_value"]
        state["header_field"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        nonlocal writer, filename
        part: _Part = state["part"]
        _, disp = parse_options_header(part.headers.get(b"content-disposition", b"").decode("latin-1"))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = disp.get(b"filename")
        if part.name == file_field:
            if writer is not None:
                errors.append(InvalidInputError(f"send exactly one '{file_field}' part"))
                return
            filename = (raw_filename or b"upload").decode("utf-8", "replace")[-255:]
            writer = store.writer(max_bytes=max_bytes, suffix=suffix)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part: _Part = state["part"]
        if errors:
            return
        if part.name == file_field and writer is not None:
            try:
                writer.write(data[start:end])
            except PayloadTooLargeError as e:
                errors.append(e)
            return
        part.data += data[start:end]
        if len(part.data) > _FIELD_LIMIT:
            errors.append(InvalidInputError(f"form field {part.name!r} is larger than {_FIELD_LIMIT} bytes"))

    def on_part_end() -> None:
        part: _Part = state["part"]
        if part.name != file_field and not errors:
            try:
                fields[part.name] = part.data.decode("utf-8")
            except UnicodeDecodeError:
                errors.append(InvalidInputError(f"form field {part.name!r} is not UTF-8 text"))

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise PayloadTooLargeError(
                    f"the request exceeds the upload limit of {max_bytes} bytes (KF_MAX_UPLOAD_BYTES)"
                )
            parser.write(chunk)
            if errors:
                raise errors[0]
        parser.finalize()
        if errors:
            raise errors[0]
        if writer is None:
            raise InvalidInputError(f"the form has no '{file_field}' file part; attach the file as '{file_field}'")
        if writer.size == 0:
            raise InvalidInputError(f"the '{file_field}' part is empty; attach the file's content")
        writer.finish()
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if isinstance(e, ValueError) and not isinstance(e, InvalidInputError):  # python-multipart's parse errors
            raise InvalidInputError(f"the multipart body is malformed: {e}") from None
        raise
    return Upload(fields=fields, file=writer, filename=filename)


def parse_spec(model: type[_Spec], fields: dict[str, str]) -> _Spec:
    """The form's ``spec`` part, validated as ``model``; a clear 422 naming the bad field otherwise."""
    extra = sorted(set(fields) - {"spec"})
    if extra:
        raise InvalidInputError(f"unexpected form field(s) {extra}; send only 'file' and 'spec'")
    if "spec" not in fields:
        raise InvalidInputError(f"the form has no 'spec' part; send the JSON {model.__name__} as 'spec'")
    try:
        return model.model_validate_json(fields["spec"])
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors(include_url=False)
        )
        raise InvalidInputError(f"the spec is invalid: {problems}") from None


async def receive_upload(
    request: Request,
    *,
    store: ArtifactStore,
    max_bytes: int,
    spec_model: type[_Spec],
    register: Callable[[Upload, _Spec], _Row],
    suffix: str = "",
) -> _Row:
    """Stream the form's file into the store's temp area, parse its spec, then ``register(upload, spec)`` in a
    worker thread (validation loads models: never on the event loop). Whatever ``register`` did not commit is
    deleted, so a rejected upload leaves nothing behind."""
    upload = await read_upload(request, store=store, max_bytes=max_bytes, suffix=suffix)
    try:
        spec = parse_spec(spec_model, upload.fields)
        return await run_in_threadpool(register, upload, spec)
    except Exception as e:
        _hide_path(e, upload.file.path, upload.filename)
        raise
    finally:
        upload.file.abort()  # no-op once committed


def _hide_path(exc: BaseException, path: Path, filename: str) -> None:
    """Name the upload by its client-side file name in ``exc``'s message, never by the server's temp path:
    validators (kf_core's loaders) say which file they could not read by its path."""
    shown = f"the uploaded file {filename!r}"
    for where in sorted({str(path.resolve()), str(path)}, key=len, reverse=True):
        exc.args = tuple(a.replace(where, shown) if isinstance(a, str) else a for a in exc.args)
