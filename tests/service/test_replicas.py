"""Replicas on separate hosts: two ``kf serve`` processes and one ``kf worker``, each in its own working
directory with its own port, work dir and artifact cache, sharing nothing but PostgreSQL, Redis and the object
store (the test's S3 server). A job run by the worker is served by both replicas; a graph assembled on one is
loaded, not composed, by the other; killing one replica loses no request sent to the other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import make_settings, pg_schema, store_settings
from tests.factories import tiny_job_body
from tests.service.helpers import DIGIT_GROUPS, TeacherFiles, delete_redis_keys, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("_pg_ready")]


@dataclass
class Host:
    """One process on its own "host": a working directory nobody else uses, and its environment."""

    dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, *args: str) -> None:
        log = (self.dir / "process.log").open("wb")
        cmd = [sys.executable, "-m", "service.cli", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return (self.dir / "process.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[tuple[Host, Host, Host]]:
    """Replicas a and b and a worker, started; catalog migrated once (as a deployment's migration job would)."""
    from service.catalog.migrate import upgrade
    from service.config import settings_env

    shared = store_settings(request, tmp_path, remote=True)
    with pg_schema() as url:
        hosts = []
        for name in ("a", "b", "worker"):
            home = tmp_path / name
            home.mkdir()
            settings = make_settings(home, url, redis_url=redis_url, queue="kf-replicas", **shared)
            settings = settings.model_copy(update={"artifact_cache_dir": home / "artifact-cache"})
            hosts.append(Host(home, {**os.environ, **settings_env(settings)}))
        upgrade(settings)
        a, b, worker = hosts
        try:
            for host in (a, b):
                port = free_port()
                host.url = f"http://127.0.0.1:{port}"
                host.start("serve", "--port", str(port))
            worker.start("worker", "--queue", "kf-replicas")
            for host in (a, b):
                wait_for(lambda h=host: _ready(h), timeout=90, what=f"replica {host.dir.name} to be ready")
            yield a, b, worker
        finally:
            for host in hosts:
                host.kill()
            delete_redis_keys(redis_url, settings)


def _ready(host: Host) -> bool:
    assert host.proc is not None and host.proc.poll() is None, host.log()
    try:
        return httpx.get(f"{host.url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _metric(host: Host, name: str) -> float:
    text = httpx.get(f"{host.url}/metrics", timeout=10).text
    line = next(ln for ln in text.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "_total "))
    return float(line.split()[-1])


def test_two_replicas_and_a_worker_share_only_the_catalog_queue_and_object_store(
    cluster: tuple[Host, Host, Host], teacher_files: TeacherFiles
) -> None:
    a, b, worker = cluster
    spec = {"name": "digits-mlp", "tasks": DIGIT_GROUPS}
    with teacher_files.digits_onnx.open("rb") as f:
        r = httpx.post(f"{a.url}/v1/teachers", files={"file": f}, data={"spec": json.dumps(spec)}, timeout=60)
    assert r.status_code == 201, r.text
    job = httpx.post(f"{b.url}/v1/jobs", json={**tiny_job_body(r.json()["id"]), "name": "fs"}, timeout=60).json()

    def finished() -> dict[str, Any] | None:
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        state: dict[str, Any] = httpx.get(f"{a.url}/v1/jobs/{job['id']}", timeout=30).json()
        return state if state["status"] in ("succeeded", "failed", "cancelled") else None

    final = wait_for(finished, timeout=180, what="the worker to run the job", interval=0.5)
    assert final["status"] == "succeeded", (final, worker.log())

    # The worker's artifacts reached both replicas through the object store: both serve the factor set.
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32).tolist()
    answers = []
    for host in (a, b):
        r = httpx.post(
            f"{host.url}/v1/predict", json={"factor_set": "fs", "tasks": ["low", "high"], "inputs": x}, timeout=60
        )
        assert r.status_code == 200, (r.text, host.log())
        answers.append(r.json()["predictions"])
    assert answers[0] == answers[1]
    assert not any((h.dir / "artifacts").exists() for h in cluster)  # no local store anywhere: S3 only

    # A graph assembled on a is loaded, not composed, by b.
    first = httpx.post(f"{a.url}/v1/assemblies", json={"factor_set": "fs", "tasks": ["high"]}, timeout=60).json()
    assert first["source"] == "composed"
    composed_b = _metric(b, "kf_assembly_compositions")
    loads_b = _metric(b, "kf_assembly_loads")
    again = httpx.post(f"{b.url}/v1/assemblies", json={"factor_set": "fs", "tasks": ["high"]}, timeout=60).json()
    assert (again["id"], again["graph_sha256"], again["source"]) == (first["id"], first["graph_sha256"], "stored")
    assert _metric(b, "kf_assembly_compositions") == composed_b
    assert _metric(b, "kf_assembly_loads") == loads_b + 1

    # Killing a loses nothing sent to b: every request to b, before, during and after the kill, is answered.
    statuses: list[int] = []
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=b.url, timeout=30) as c:
            for _ in range(40):
                try:
                    r = c.post("/v1/predict", json={"factor_set": "fs", "tasks": ["low"], "inputs": x})
                    statuses.append(r.status_code)
                except httpx.HTTPError as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(statuses) >= 20, timeout=60, what="requests to b to be under way")
    a.kill()
    for t in threads:
        t.join(timeout=120)
    assert a.proc is not None and a.proc.returncode == -signal.SIGKILL
    assert errors == []
    assert statuses == [200] * 160, b.log()
