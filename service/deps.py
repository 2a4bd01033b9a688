"""FastAPI dependencies as ``Annotated`` aliases: routes declare ``session: SessionDep`` and nothing else.

Plain lookups are ``async def``: FastAPI runs a sync dependency in its thread pool, a hop per request that the
prediction path cannot afford. Everything comes from ``app.state``, set up once by ``create_app``'s lifespan, so a
test's app uses the test's settings, database and artifact directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from service.catalog.artifacts import ArtifactStore
from service.config import Settings
from service.jobs.runners import Runner
from service.serving.runtime import Runtime

__all__ = ["Page", "PageDep", "RunnerDep", "RuntimeDep", "SessionDep", "SettingsDep", "StoreDep"]

MAX_PAGE = 200
MAX_OFFSET = 2**31 - 1  # what every database's integer holds


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session(request: Request) -> Iterator[Session]:
    # Service functions commit what they change; whatever is left uncommitted is rolled back on close.
    with request.app.state.sessionmaker() as session:
        yield session


async def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


async def _runner(request: Request) -> Runner:
    runner: Runner = request.app.state.runner
    return runner


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


class Page:
    """``?offset=&limit=`` of a list endpoint."""

    def __init__(
        self,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"rows to return (at most {MAX_PAGE})")] = 50,
    ) -> None:
        self.offset, self.limit = offset, limit


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(_session)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
RunnerDep = Annotated[Runner, Depends(_runner)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
PageDep = Annotated[Page, Depends()]
