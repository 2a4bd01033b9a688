"""Fixtures of the service tests that need more than a catalog: teacher files and job backends.

``backend`` runs each job test twice: SQLite with the API's inline runner and a local artifact directory, and
PostgreSQL + Redis + object storage (the S3 server of ``s3_endpoint``) with real ``kf worker`` processes (started
by the test through ``backend.start_worker()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings, open_client, pg_schema, store_settings
from tests.factories import make_keys
from tests.service.helpers import DIGIT_GROUPS, Backend, TeacherFiles, delete_redis_keys, upload_teacher


@pytest.fixture
def keys(session: Any) -> dict[str, str]:
    """An admin and a predict key in the test's catalog: ``{"admin": key, "predict": key}``."""
    return make_keys(session)


@pytest.fixture
def api(keys: dict[str, str], migrated: Any) -> Iterator[Any]:  # noqa: ARG001 (keys must exist first)
    """A client of an API that has keys (so requests need one); jobs are not run."""
    with open_client(migrated, run_jobs=False) as c:
        yield c


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory: pytest.TempPathFactory) -> TeacherFiles:
    from tests.factories import DSPRITES_HEADS, onnx_teacher_file, torchscript_teacher_file

    root = tmp_path_factory.mktemp("teachers")
    return TeacherFiles(
        digits_onnx=onnx_teacher_file(root / "digits.onnx", {"digit": 10}),
        dsprites_onnx=onnx_teacher_file(root / "dsprites.onnx", DSPRITES_HEADS, input_shape=(1, 64, 64)),
        digits_torchscript=torchscript_teacher_file(root / "digits.pt", {"digit": 10}),
    )


@pytest.fixture
def digits_teacher(client: Any, teacher_files: TeacherFiles) -> dict[str, Any]:
    """A digits ONNX teacher in the catalog, with the two class-group tasks low and high."""
    response = upload_teacher(client, teacher_files.digits_onnx, {"name": "digits-mlp", "tasks": DIGIT_GROUPS})
    assert response.status_code == 201, response.text
    teacher: dict[str, Any] = response.json()
    return teacher


@pytest.fixture(params=["sqlite-inline", "postgresql-rq"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    from service.catalog.migrate import upgrade

    if request.param == "sqlite-inline":
        settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/catalog.db")
        upgrade(settings)
        yield Backend(request.param, settings)
        return
    request.getfixturevalue("_pg_ready")
    redis = request.getfixturevalue("redis_url")
    with pg_schema() as url:
        settings = make_settings(tmp_path, url, redis_url=redis, **store_settings(request, tmp_path, remote=True))
        upgrade(settings)
        logs = tmp_path / "logs"
        logs.mkdir()
        b = Backend(request.param, settings, logs=logs)
        try:
            yield b
        finally:
            b.stop_workers()
            delete_redis_keys(redis, settings)
