"""``/v1/assemblies``: assemble a task subset of a factor set into one ONNX graph, inspect it, download it."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from service.api.deps import RuntimeDep, SessionDep, StoreDep
from service.api.routes import documented
from service.catalog.models import Assembly
from service.errors import NotFoundError
from service.schemas import AssemblyCreate, AssemblyPublic
from service.serving.v1 import assembly_public

router = APIRouter(prefix="/v1/assemblies", tags=["serving"])


@router.post(
    "",
    response_model=AssemblyPublic,
    summary="Assemble tasks of a factor set into one graph (cached)",
    responses=documented(404, 422, 500),
)
async def create_assembly(body: AssemblyCreate, runtime: RuntimeDep) -> AssemblyPublic:
    entry, state = await runtime.load_assembly(body.factor_set, body.tasks, combined=body.combined)
    return assembly_public(entry, state, runtime)


@router.get(
    "/{assembly_id}", response_model=AssemblyPublic, summary="Show an assembly", responses=documented(404, 422, 500)
)
async def get_assembly(assembly_id: uuid.UUID, session: SessionDep, runtime: RuntimeDep) -> AssemblyPublic:
    row = await run_in_threadpool(_row, session, assembly_id)
    entry, state = await runtime.load_assembly(str(row.factor_set_id), list(row.tasks), combined=row.combined)
    return assembly_public(entry, state, runtime)


@router.get(
    "/{assembly_id}/onnx",
    response_class=StreamingResponse,
    summary="Download the assembled ONNX graph (sha256-verified)",
    responses={
        200: {"content": {"application/onnx": {}}, "description": "The graph's bytes."},
        **documented(404, 422, 500),
    },
)
def download_assembly(assembly_id: uuid.UUID, session: SessionDep, store: StoreDep) -> StreamingResponse:
    artifact = _row(session, assembly_id).graph_artifact
    body = store.iter_verified(artifact.sha256, size=artifact.size_bytes)  # raises before any byte is sent
    headers = {
        "Content-Length": str(artifact.size_bytes),
        "X-Content-SHA256": artifact.sha256,
        "Content-Disposition": f'attachment; filename="assembly-{assembly_id}.onnx"',
    }
    return StreamingResponse(body, media_type="application/onnx", headers=headers)


def _row(session: Session, assembly_id: uuid.UUID) -> Assembly:
    row = session.get(Assembly, assembly_id)
    if row is None:
        raise NotFoundError("assembly", assembly_id)
    return row
