"""``GET /v1/artifacts/{sha256}``: download a stored file, verified against its hash before a byte is sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from service.api.routes import documented
from service.catalog import queries as catalog
from service.deps import SessionDep, StoreDep

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256 of the content")]


@router.get(
    "/{sha256}",
    response_class=StreamingResponse,
    summary="Download an artifact (sha256-verified)",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The artifact's bytes."},
        **documented(404, 422, 500),
    },
)
def get_artifact(sha256: Sha256, session: SessionDep, store: StoreDep) -> StreamingResponse:
    row = catalog.get_artifact(session=session, sha256=sha256)
    body = store.iter_verified(row.sha256, size=row.size_bytes)  # raises before any byte is sent
    headers = {"Content-Length": str(row.size_bytes), "X-Content-SHA256": row.sha256}
    return StreamingResponse(body, media_type=row.media_type, headers=headers)
