"""``POST /v1/gc``: delete the artifacts nothing references (admin); ``?dry_run=true`` only reports them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from service.api.deps import RuntimeDep, SettingsDep, StoreDep
from service.api.routes import documented
from service.catalog.gc import collect
from service.schemas import GcPublic

router = APIRouter(prefix="/v1/gc", tags=["storage"])


@router.post(
    "",
    response_model=GcPublic,
    summary="Collect unreferenced artifacts: count and bytes (admin; dry_run only reports)",
    responses=documented(422),
)
async def gc(
    request: Request, settings: SettingsDep, store: StoreDep, runtime: RuntimeDep, dry_run: bool = False
) -> GcPublic:
    report = await run_in_threadpool(
        collect,
        factory=request.app.state.sessionmaker,
        store=store,
        dry_run=dry_run,
        grace_s=settings.gc_grace_s,
        protect=runtime.in_use_sha256(),
    )
    return GcPublic(**vars(report))
