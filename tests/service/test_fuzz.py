"""Schemathesis against the app's own OpenAPI document, in process: every operation, every check, at least 100
examples each. No server error, no undocumented status code, every response matching its schema.

The app runs on a migrated SQLite catalog holding a small real factor set (so prediction routes reach the
runtime, not only the 404 of an unknown factor set); jobs are recorded, not run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import RecordingRunner, make_job, make_settings
from tests.service.serving import register, train_small_factor_set


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from service.artifacts import ArtifactStore
    from service.db import make_engine, make_sessionmaker
    from service.main import create_app
    from service.migrate import upgrade

    root: Path = tmp_path_factory.mktemp("fuzz")
    cfg = make_settings(root, f"sqlite:///{root}/catalog.db", max_request_bytes=1 << 20, max_batch=8)
    upgrade(cfg)
    engine = make_engine(cfg)
    factory = make_sessionmaker(engine)
    store = ArtifactStore(cfg.artifact_dir)
    with factory() as session:
        register(
            train_small_factor_set(root / "run"),
            session=session,
            job=make_job(session, store),
            factory=factory,
            store=store,
        )
    engine.dispose()
    app = create_app(cfg, runner=RecordingRunner)
    with TestClient(app):  # the lifespan runs: catalog, runtime and runner are up for every generated call
        yield app


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_honours_its_schema(case: Any) -> None:
    case.call_and_validate()
