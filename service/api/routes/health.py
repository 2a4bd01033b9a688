"""``GET /v1/health``: is the catalog reachable, which job runner and inference provider are in use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from service.deps import RuntimeDep, SessionDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", summary="Liveness and configuration summary")
def health(session: SessionDep, settings: SettingsDep, runtime: RuntimeDep) -> dict[str, Any]:
    session.execute(text("SELECT 1"))
    return {
        "status": "ok",
        "database": session.get_bind().dialect.name,
        "jobs": "rq" if settings.redis_url else "inline",
        "provider": runtime.provider.name,
        "provider_reason": runtime.provider.reason,
        "cached_assemblies": len(runtime.entries()),
        "cache_bytes": runtime.cache_bytes,
    }
