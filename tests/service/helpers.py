"""Helpers of the service tests: teacher files and specs, job backends (inline or RQ workers), polling."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class TeacherFiles:
    digits_onnx: Path  # 1x8x8 -> digit (10), feat_0
    dsprites_onnx: Path  # 1x64x64 -> shape, scale, orientation, pos_x, pos_y, feat_0
    digits_torchscript: Path  # 1x8x8 -> (digit, feature) tuple


DIGIT_GROUPS = [
    {"name": "low", "output": "digit", "classes": [0, 1, 2, 3, 4]},
    {"name": "high", "output": "digit", "classes": [5, 6, 7, 8, 9]},
]


def upload_teacher(client: Any, path: Path, spec: dict[str, Any]) -> Any:
    return client.post("/v1/teachers", files={"file": (path.name, path.read_bytes())}, data={"spec": json.dumps(spec)})


@dataclass
class Backend:
    """A place where jobs run: SQLite + inline runner, or PostgreSQL + Redis + ``kf worker`` processes."""

    name: str
    settings: Any
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path | None = None

    @property
    def uses_rq(self) -> bool:
        return self.settings.redis_url is not None

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A real ``kf worker`` process (its own process group), logging to a file in the test's tmp dir."""
        from service.config import settings_env

        assert self.uses_rq and self.logs is not None
        env = {**os.environ, **settings_env(self.settings)}
        log = (self.logs / f"worker-{len(self.workers)}.log").open("wb")
        cmd = [sys.executable, "-m", "service.cli", "worker", "--name", f"{self.settings.queue}-{len(self.workers)}"]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def worker_log(self) -> str:
        if self.logs is None:
            return ""
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.logs.glob("worker-*.log")))


def delete_redis_keys(url: str, settings: Any) -> None:
    """RQ's keys of this test: its queue and workers (named after the queue) and the RQ jobs of its jobs."""
    import redis
    from sqlalchemy import select

    from service.catalog.db import make_engine
    from service.catalog.models import Job

    engine = make_engine(settings)
    with engine.connect() as conn:
        job_ids = [str(i) for i in conn.scalars(select(Job.id))]
    engine.dispose()
    r = redis.Redis.from_url(url)
    patterns = [f"*{settings.queue}*", *(f"*kf-{i}-*" for i in job_ids)]
    keys = {k for pattern in patterns for k in r.scan_iter(match=pattern)}
    if keys:
        r.delete(*keys)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def watch(client: Any, job_id: str, *, timeout: float, backend: Backend) -> list[dict[str, Any]]:
    """Every distinct state of the job until it is final (fails with the worker's log on timeout)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if not seen or (job["status"], job["stage"], job["step"]) != (
            seen[-1]["status"],
            seen[-1]["stage"],
            seen[-1]["step"],
        ):
            seen.append(job)
        if job["status"] in FINAL:
            return seen
        if backend.workers and all(w.poll() is not None for w in backend.workers):
            pytest.fail(f"every kf worker exited while job {job_id} was {job['status']}:\n{backend.worker_log()}")
        time.sleep(0.05)
    pytest.fail(f"job {job_id} not finished after {timeout} s: {seen[-1]}\n{backend.worker_log()}")


def small_dsprites_job(teacher_id: str, **train: Any) -> dict[str, Any]:
    """dSprites, 1,536 images, two epochs of ~33 steps; MLP CKN and TSNs so it trains in seconds on a CPU."""
    return {
        "teacher_id": teacher_id,
        "dataset": "dsprites",
        "name": "dsprites-small",
        "overrides": {
            "epochs": 2,
            "samples": 1536,
            "train": {"batch_size": 32, "eval_every": 0, **train},
            "factor": {
                "ckn": {"name": "mlp", "kwargs": {"hidden": [32]}},
                "tsn": {"name": "mlp", "kwargs": {"hidden": [8]}},
                "feature_dim": 16,
            },
        },
    }


def corrupt_artifact(store: Any, sha256: str, mutate: Callable[[bytes], bytes]) -> bytes:
    """Damage a stored artifact in place, outside the service's code (bit rot on disk, a bad write to the object
    store); returns the good bytes. On object storage the object is rewritten through the S3 API, and this host's
    cached copy is dropped, as on a replica that has not read it yet (a damaged cached copy is fetched again)."""
    if store.remote is None:
        path = store.path_for(sha256)
        good: bytes = path.read_bytes()
        path.chmod(0o644)
        path.write_bytes(mutate(good))
        return good
    import boto3

    bucket, _, prefix = store.location.removeprefix("s3://").partition("/")
    key = f"{prefix}/{sha256[:2]}/{sha256}".lstrip("/")
    s3 = boto3.client("s3", endpoint_url=store.remote.endpoint_url)
    good = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=mutate(good))
    store.cache.discard(sha256)
    return good


def stored_files(store: Any) -> list[str]:
    """Every artifact in the store, and every temp file its writers left (none is expected)."""
    local = [str(p) for p in Path(store.root).rglob("*") if p.is_file()]
    if store.remote is None:
        return local
    return sorted(local + [f"{store.location}/{k}" for k in store.remote.list_keys()])
