"""``/v1/teachers``: upload a teacher model (validated before it is stored), list and show them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from service.api.deps import PageDep, SessionDep, SettingsDep, StoreDep
from service.api.routes import documented, multipart_body
from service.api.uploads import receive_upload
from service.catalog import queries as catalog
from service.catalog import teachers
from service.catalog.reclaim import retire_teacher
from service.schemas import GcPublic, RetiredPublic, TeacherPublic, TeacherSpec, TeachersPublic

router = APIRouter(prefix="/v1/teachers", tags=["teachers"])


@router.post(
    "",
    status_code=201,
    response_model=TeacherPublic,
    summary="Upload an ONNX or TorchScript teacher with its JSON spec",
    responses=documented(409, 413, 415, 422),
    openapi_extra=multipart_body("TeacherSpec", "the .onnx file or torch.jit.save archive"),
)
async def create_teacher(request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep) -> object:
    return await receive_upload(
        request,
        store=store,
        max_bytes=settings.max_upload_bytes,
        spec_model=TeacherSpec,
        register=lambda upload, spec: teachers.register_teacher(
            session=session, file=upload.file, filename=upload.filename, spec=spec
        ),
    )


@router.get("", response_model=TeachersPublic, summary="List teachers, newest first", responses=documented(422))
def list_teachers(session: SessionDep, page: PageDep) -> TeachersPublic:
    rows, count = catalog.list_teachers(session=session, offset=page.offset, limit=page.limit)
    return TeachersPublic(data=[TeacherPublic.model_validate(r) for r in rows], count=count)


@router.get("/{teacher_id}", response_model=TeacherPublic, summary="Show a teacher", responses=documented(404, 422))
def get_teacher(teacher_id: uuid.UUID, session: SessionDep) -> object:
    return catalog.get_teacher(session=session, teacher_id=teacher_id)


@router.delete(
    "/{teacher_id}",
    response_model=RetiredPublic,
    summary="Delete a teacher and its finished jobs, and free its file (admin; refused while factor sets or active "
    "jobs use it)",
    responses=documented(404, 409, 422),
)
async def delete_teacher(teacher_id: uuid.UUID, request: Request, store: StoreDep) -> RetiredPublic:
    name, report = await run_in_threadpool(
        retire_teacher, factory=request.app.state.sessionmaker, store=store, teacher_id=teacher_id
    )
    return RetiredPublic(deleted=name, freed=GcPublic(**vars(report)))
