"""Dependencies failing under a running API: Redis stopped and restarted, PostgreSQL connections killed, artifact
bytes corrupted. Real processes and servers throughout (a private redis-server per test; the machine's
PostgreSQL); each test fails if the behaviour regresses. (A worker killed mid-job: test_job_lifecycle.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from service.catalog.artifacts import open_store
from service.catalog.models import Job
from tests.conftest import _pg_admin, make_job, make_settings, open_client, pg_schema
from tests.service.helpers import DIGIT_GROUPS, TeacherFiles, corrupt_artifact, free_port, upload_teacher, wait_for
from tests.service.serving import Trained, register, train_small_factor_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_small_factor_set(tmp_path_factory.mktemp("factorized"))


class RedisServer:
    """A private redis-server that a test can stop and start again on the same port."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("KF_TEST_REQUIRE_SERVICES") == "1":
                pytest.fail("redis-server is not installed and KF_TEST_REQUIRE_SERVICES=1")
            pytest.skip("redis-server is not installed")
        self.binary, self.tmp, self.port = binary, tmp, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([self.binary, *args, "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        wait_for(self._answers, timeout=20, what="redis-server to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _job_body(teacher_id: str) -> dict[str, Any]:
    from tests.factories import tiny_job_body

    return tiny_job_body(teacher_id)


def test_redis_down_predictions_keep_answering_jobs_get_503_and_recover_without_restart(
    redis_server: RedisServer,
    trained: Trained,
    session: Any,
    job: Any,
    factory: Any,
    store: Any,
    migrated: Any,
    teacher_files: TeacherFiles,
) -> None:
    register(trained, session=session, job=job, factory=factory, store=store)
    settings = migrated.model_copy(update={"redis_url": redis_server.url})
    with open_client(settings) as api:  # the real RQ runner, with its recovery loop running
        x = trained.x[:2].tolist()
        assert api.post("/v1/predict", json={"factor_set": "fs", "inputs": x}).status_code == 200  # cached now
        teacher = upload_teacher(api, teacher_files.digits_onnx, {"name": "digits", "tasks": DIGIT_GROUPS}).json()
        assert api.post("/v1/jobs", json=_job_body(teacher["id"])).status_code == 202
        jobs_before = session.scalar(select(func.count()).select_from(Job))

        redis_server.stop()
        for _ in range(5):
            r = api.post("/v1/predict", json={"factor_set": "fs", "inputs": x})
            assert r.status_code == 200, r.text
        r = api.post("/v1/jobs", json=_job_body(teacher["id"]))
        assert r.status_code == 503, r.text
        assert "queue" in r.json()["detail"] and "KF_REDIS_URL" in r.json()["detail"]
        session.expire_all()
        assert session.scalar(select(func.count()).select_from(Job)) == jobs_before  # nothing half-submitted
        assert api.get("/v1/jobs").status_code == 200  # the catalog still answers
        assert api.get("/v2/health/ready").status_code == 200  # serving does not depend on Redis

        redis_server.start()  # same port, no API restart
        r = api.post("/v1/jobs", json=_job_body(teacher["id"]))
        assert r.status_code == 202, r.text
        assert api.app.state.runner._thread.is_alive()  # the recovery loop survived the outage


@pytest.mark.usefixtures("_pg_ready")
def test_killed_postgresql_connections_are_replaced_without_errors(tmp_path: Path, trained: Trained) -> None:
    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.migrate import upgrade

    with pg_schema() as url:
        settings = make_settings(tmp_path, url)
        upgrade(settings)
        engine = make_engine(settings)
        factory = make_sessionmaker(engine)
        store = open_store(settings)
        with factory() as session:
            job = make_job(session, store)  # the stand-in job the `job` fixture creates
            register(trained, session=session, job=job, factory=factory, store=store)
        engine.dispose()
        schema = url.rsplit("application_name=", 1)[1]
        with open_client(settings, run_jobs=False) as api:
            for _ in range(3):  # fill the pool with live connections
                assert api.get("/v1/factor-sets").status_code == 200
            with _pg_admin() as conn:
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (schema,),
                ).fetchone()
            assert killed is not None and killed[0] >= 1
            statuses = [api.get("/v1/factor-sets").status_code for _ in range(20)]
            statuses += [api.get("/v1/jobs").status_code for _ in range(5)]
            assert statuses == [200] * 25  # pool_pre_ping replaced every dead connection: no 500 at all
            meta = api.get("/v2/models/fs")
            assert meta.status_code == 200


def test_a_corrupted_part_is_refused_with_a_clear_error_while_verified_parts_keep_serving(
    trained: Trained, session: Any, job: Any, factory: Any, store: Any, migrated: Any
) -> None:
    fs = register(trained, session=session, job=job, factory=factory, store=store)
    part = next(f for f in fs.factors if f.task == "pos_y").artifact
    with open_client(migrated, run_jobs=False) as api:
        x = trained.x[:2].tolist()
        assert api.post("/v1/predict", json={"factor_set": "fs", "tasks": ["shape"], "inputs": x}).status_code == 200
        good = corrupt_artifact(store, part.sha256, lambda b: b[:-16] + bytes(16))  # same size, different bytes
        for copy in (Path(migrated.work_dir) / "serving" / "parts").rglob("task_pos_y.onnx"):
            copy.chmod(0o644)
            copy.write_bytes(b"garbage")  # the server's working copy too: it must go back to the store

        r = api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["pos_y"]})
        assert r.status_code == 500, r.text
        assert part.sha256 in r.json()["detail"] and "not be served" in r.json()["detail"]
        with open_client(migrated, run_jobs=False) as fresh:  # a new process must load the parts: refused
            r = fresh.post("/v1/predict", json={"factor_set": "fs", "tasks": ["shape"], "inputs": x})
            assert r.status_code == 500, r.text
            assert part.sha256 in r.json()["detail"]
        r = api.post("/v1/predict", json={"factor_set": "fs", "tasks": ["pos_y"], "inputs": x})
        assert r.status_code == 200  # the parts this process verified when it loaded them keep serving

        store.put_bytes(good)  # restoring the good bytes repairs the store (content-addressed)
        assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["pos_y"]}).status_code == 200
        with open_client(migrated, run_jobs=False) as fresh:
            r = fresh.post("/v1/predict", json={"factor_set": "fs", "tasks": ["pos_y"], "inputs": x, "logits": True})
            assert r.status_code == 200, r.text
            got = np.asarray(r.json()["predictions"]["pos_y"]["logits"])
            assert np.abs(got - trained.logits(trained.x[:2])["pos_y"]).max() <= 1e-5
