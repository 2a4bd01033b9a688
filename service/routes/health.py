"""``GET /v1/health``: is the catalog reachable, and which job runner is in use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from service.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", summary="Liveness and configuration summary")
def health(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    session.execute(text("SELECT 1"))
    return {
        "status": "ok",
        "database": session.get_bind().dialect.name,
        "jobs": "rq" if settings.redis_url else "inline",
    }
