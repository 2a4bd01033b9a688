"""``GET /v1/artifacts/{sha256}``: download a stored file, verified against its hash before a byte is sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from service.api.deps import SessionDep, StoreDep
from service.api.routes import documented
from service.catalog import queries as catalog

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

JSON = "application/json"
# Every media type an artifact row is stored with: teachers, datasets, factor set parts, manifests and reports,
# checkpoints (service.catalog.teachers, .datasets, service.jobs.register, service.catalog.checkpoints).
MEDIA_TYPES = (
    "application/onnx",
    JSON,
    "application/x-npz",
    "application/x-torchscript",
    "application/x-kf-checkpoint",
)
_BYTES = {"type": "string", "format": "binary"}

Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256 of the content")]


@router.get(
    "/{sha256}",
    response_class=StreamingResponse,
    summary="Download an artifact (sha256-verified)",
    responses={
        200: {
            "content": {media: {"schema": {} if media == JSON else _BYTES} for media in MEDIA_TYPES},
            "description": "The artifact's bytes, as the media type it was stored with.",
        },
        **documented(404, 422, 500),
    },
)
def get_artifact(sha256: Sha256, session: SessionDep, store: StoreDep) -> StreamingResponse:
    row = catalog.get_artifact(session=session, sha256=sha256)
    body = store.iter_verified(row.sha256, size=row.size_bytes)  # raises before any byte is sent
    headers = {"Content-Length": str(row.size_bytes), "X-Content-SHA256": row.sha256}
    return StreamingResponse(body, media_type=row.media_type, headers=headers)
