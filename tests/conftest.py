"""Service test fixtures: an empty, migrated catalog per test on SQLite and on PostgreSQL, artifact stores, apps.

Every database test runs twice, ``[sqlite]`` and ``[postgresql]``: SQLite with the artifact store in a local
directory (the embedded setup), PostgreSQL with the artifacts on object storage (the scaled-out setup), a real
S3-protocol server (moto's standalone ``moto_server``, one per test run, over HTTP) with a fresh prefix per test.
Each test run (pytest session) migrates its own PostgreSQL schema in the ``test`` database
(``KF_TEST_POSTGRES_URL``) once, empties it before every test and drops it at the end (schemas of runs that were
killed are dropped by the next run), so reruns and parallel CI jobs never see each other's rows. SQLite tests copy a
migrated file. Redis tests (``tests/service/conftest.py``) use their own queue names and delete their keys. Where
PostgreSQL or Redis is not reachable, the tests that need it are skipped with the reason (``-ra`` prints it); set
``KF_TEST_REQUIRE_SERVICES=1`` to make that a failure.

Every response a test client receives is checked against the app's OpenAPI document: a status code a route
does not document fails the test that provoked it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_URL = os.environ.get("KF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_REQUIRE = os.environ.get("KF_TEST_REQUIRE_SERVICES") == "1"
_SCHEMA_PREFIX = f"kf_test_{os.getpid()}_"


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if _REQUIRE:
        pytest.fail(message + " and KF_TEST_REQUIRE_SERVICES=1")
    pytest.skip(message)


def _pg_admin() -> Any:
    import psycopg

    url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def _pg_ready() -> bool:
    try:
        with _pg_admin() as conn:
            # Schemas left by test runs that were killed before their teardown (their pid is gone).
            for (name,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kf_test_%'").fetchall():
                match = re.match(r"kf_test_(\d+)_", name)
                if match and not _pid_alive(int(match.group(1))):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        return True
    except Exception as e:
        _unavailable("PostgreSQL at " + PG_URL, e)
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh, empty schema; yields a database URL whose connections use it (and are tagged with its name)."""
    name = _SCHEMA_PREFIX + secrets.token_hex(4)
    with _pg_admin() as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{name}&application_name={name}"
    finally:
        with _pg_admin() as conn:
            # Job processes that outlived their test must not keep the schema alive (or hold locks on it).
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,))
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (for the migration tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    request.getfixturevalue("_pg_ready")
    with pg_schema() as url:
        yield url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.catalog.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "catalog.db"
    upgrade(make_settings(path.parent, f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def _pg_session_url(_pg_ready: bool) -> Iterator[str]:
    from service.catalog.migrate import upgrade

    with pg_schema() as url:
        upgrade(make_settings(Path("/nonexistent"), url))
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty catalog: a copy of a migrated SQLite file, or this session's PostgreSQL schema truncated.

    Migrating once per session (``alembic upgrade head``) instead of once per test keeps the PostgreSQL half of
    the suite fast; the migration tests themselves use ``empty_database_url``.
    """
    import shutil

    if request.param == "sqlite":
        shutil.copy(request.getfixturevalue("_sqlite_template"), tmp_path / "catalog.db")
        return f"sqlite:///{tmp_path}/catalog.db"
    url: str = request.getfixturevalue("_pg_session_url")
    from service.catalog.models import Base

    schema = url.rsplit("application_name=", 1)[1]
    with _pg_admin() as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        for table in reversed(Base.metadata.sorted_tables):  # DELETE beats TRUNCATE on tables this small
            conn.execute(f"DELETE FROM {table.name}")
    return url


S3_BUCKET = "kf-test"
_S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a real S3-protocol server (``moto_server``) started for this test run, with the bucket
    ``kf-test``. Its dummy credentials go into the environment, so processes the tests start (workers, replicas,
    job processes) find them the way a deployment would: through the standard AWS variables."""
    import urllib.request

    from tests.service.helpers import free_port

    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(_S3_ENV)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {endpoint}: see {log.name}")
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def store_settings(request: pytest.FixtureRequest, tmp_path: Path, *, remote: bool) -> dict[str, Any]:
    """Settings of the artifact store of a test: a local directory, or a fresh prefix on the S3 server."""
    if not remote:
        return {"artifact_url": str(tmp_path / "artifacts")}
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return {"artifact_url": f"s3://{S3_BUCKET}/{secrets.token_hex(6)}", "s3_endpoint_url": endpoint}


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as e:
        _unavailable("Redis at " + REDIS_URL, e)
    return REDIS_URL


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Any:
    """Settings for a test: its own artifact and work dirs, fast heartbeats, one torch thread per job."""
    from service.config import Settings

    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": None,
        "artifact_url": str(tmp_path / "artifacts"),
        "artifact_cache_dir": tmp_path / "artifact-cache",
        "work_dir": tmp_path / "work",
        "heartbeat_interval_s": 0.5,
        "heartbeat_timeout_s": 4.0,
        "progress_interval_s": 0.1,
        "cancel_grace_s": 2.0,
        "torch_threads": 1,
        "max_upload_bytes": 4 << 20,
        "queue": "kf-test-" + secrets.token_hex(4),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Any:
    remote = database_url.startswith("postgresql")  # PostgreSQL runs go with object storage: the scaled-out setup
    return make_settings(tmp_path, database_url, **store_settings(request, tmp_path, remote=remote))


@pytest.fixture
def migrated(settings: Any) -> Any:
    """``settings`` of a migrated catalog (every ``database_url`` is migrated; the name says what tests rely on)."""
    return settings


@pytest.fixture
def session(migrated: Any) -> Iterator[Any]:
    from service.catalog.db import make_engine, make_sessionmaker

    engine = make_engine(migrated)
    with make_sessionmaker(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture
def job(session: Any, store: Any) -> Any:
    """A queued job row (max 2 attempts, factor set name "fs") on built-in digits and a stand-in teacher."""
    return make_job(session, store)


@pytest.fixture
def factory(migrated: Any) -> Iterator[Any]:
    """A sessionmaker on the test's catalog (what the API and workers use)."""
    from service.catalog.db import make_engine, make_sessionmaker

    engine = make_engine(migrated)
    yield make_sessionmaker(engine)
    engine.dispose()


def make_job(session: Any, store: Any) -> Any:
    """A queued job row (max 2 attempts, factor set name "fs") on built-in digits and a stand-in teacher."""
    from service.catalog import queries as catalog
    from service.schemas import TeacherInfo
    from tests.factories import queued_job

    stored = store.put_bytes(b"teacher bytes")
    artifact = catalog.record_artifact(session=session, stored=stored, media_type="application/onnx")
    info = TeacherInfo(
        format="onnx",
        input_shape=[1, 8, 8],
        outputs={"digit": "digit"},
        output_sizes={"digit": 10},
        features=[],
        feature_dims=[],
        class_names={},
        tasks=[],
    )
    teacher = catalog.create_teacher(
        session=session, name="t", filename="t.onnx", description="", info=info, artifact=artifact
    )
    dataset = catalog.ensure_builtin_dataset(session=session, name="digits", classes={"digit": list("0123456789")})
    return queued_job(session, teacher_id=teacher.id, dataset_id=dataset.id)


@pytest.fixture
def store(migrated: Any) -> Any:
    from service.catalog.artifacts import open_store

    return open_store(migrated)


class RecordingRunner:
    """A job runner that runs nothing: for tests of the API around jobs, not of their execution."""

    def __init__(self, *_args: Any) -> None:
        self.enqueued: list[Any] = []

    def start(self) -> None: ...

    def stop(self, *, terminate: bool = True) -> None: ...

    def enqueue(self, job: Any) -> None:
        self.enqueued.append(job.id)


_OPENAPI: list[Any] = []


def _openapi_paths(app: Any) -> tuple[dict[str, Any], list[tuple[re.Pattern[str], str]]]:
    """The app's OpenAPI paths and a regex per path template (computed once: every test app is the same)."""
    if not _OPENAPI:
        paths = app.openapi()["paths"]
        concrete_first = sorted(paths, key=lambda p: p.count("{"))  # OpenAPI: /x/import before /x/{ref}
        _OPENAPI.extend(
            [paths, [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in concrete_first]]
        )
    return _OPENAPI[0], _OPENAPI[1]


def open_client(settings: Any, *, run_jobs: bool = True) -> Any:
    """A TestClient (lifespan running) whose every response must be documented in the OpenAPI schema.

    ``run_jobs=False`` swaps the job runner for a :class:`RecordingRunner`.
    """
    from fastapi.testclient import TestClient

    from service.jobs.runners import make_runner
    from service.main import create_app

    app = create_app(settings, runner=make_runner if run_jobs else RecordingRunner)
    client = TestClient(app)
    client.event_hooks["response"] = [lambda response: assert_documented(app, response)]
    return client


def assert_documented(app: Any, response: Any) -> None:
    """Fail unless the route that produced ``response`` documents its status code in OpenAPI."""
    paths, patterns = _openapi_paths(app)
    path, method = response.request.url.path, response.request.method.lower()
    template = next((p for rx, p in patterns if rx.match(path)), None)
    if template is None or method not in paths[template]:
        return  # not a route of ours (the router's own 404, docs pages)
    documented = paths[template][method]["responses"]
    assert str(response.status_code) in documented, (
        f"{method.upper()} {template} answered {response.status_code}, which its OpenAPI responses "
        f"({sorted(documented)}) do not document"
    )


@pytest.fixture
def client(migrated: Any) -> Iterator[Any]:
    """An API client whose jobs are recorded, not run (see ``backend`` for tests that run jobs)."""
    with open_client(migrated, run_jobs=False) as c:
        yield c
