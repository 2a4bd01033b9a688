"""Acceptance 2 and 3 with real processes: a worker killed with SIGKILL mid-training, and a running job cancelled.

- kill -9: on PostgreSQL + Redis the ``kf worker`` process is killed (its work horse dies with it); on SQLite the
  inline job process is. A new worker (or the API's runner) resumes the job from its last stored checkpoint, not
  from step 0, and exactly one factor set is registered.
- cancel: a running job stops within 5 s, is marked cancelled, and registers nothing.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from service.catalog.db import make_engine
from service.catalog.models import Artifact, FactorSet
from tests.conftest import open_client
from tests.service.helpers import Backend, TeacherFiles, small_dsprites_job, upload_teacher, wait_for, watch

pytestmark = pytest.mark.slow


def _count(backend: Backend, query: Any) -> int:
    engine = make_engine(backend.settings)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(query) or 0)
    finally:
        engine.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _running_pid(job: dict[str, Any]) -> int:
    return int(job["worker"].rsplit(":", 1)[1])


def test_kill_dash_nine_mid_training_resumes_from_the_checkpoint(backend: Backend, teacher_files: TeacherFiles) -> None:
    with open_client(backend.settings) as client:
        first = backend.start_worker() if backend.uses_rq else None
        teacher = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
        body = small_dsprites_job(teacher["id"], checkpoint_every=8)  # 66 steps, a checkpoint every 8
        job = client.post("/v1/jobs", json=body).json()

        def checkpointed() -> dict[str, Any] | None:
            j: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}").json()
            return j if j["status"] == "running" and (j["checkpoint_step"] or 0) >= 8 else None

        before = wait_for(checkpointed, timeout=90, what="a stored checkpoint", interval=0.02)
        trainer = _running_pid(before)  # the process training the job: RQ's work horse, or the inline process
        if first is not None:
            os.kill(first.pid, signal.SIGKILL)  # the worker only: its horse must die with it, not train on
            first.wait()
        else:
            os.kill(trainer, signal.SIGKILL)
        wait_for(lambda: not _alive(trainer), timeout=10, what="the training process to die")
        killed = client.get(f"/v1/jobs/{job['id']}").json()
        assert killed["status"] in ("running", "queued") and killed["step"] < killed["steps_total"]
        assert killed["checkpoint_step"] >= before["checkpoint_step"] > 0

        if backend.uses_rq:
            backend.start_worker()  # finds the job without a heartbeat and queues it again
        # Taken over promptly: once the heartbeat is overdue (4 s here), not when RQ's own bookkeeping notices.
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["attempts"] == 2,
            timeout=30,
            what="another run to take the job over",
        )
        final = watch(client, job["id"], timeout=120, backend=backend)[-1]
        assert final["status"] == "succeeded", f"{final['error']}\n{backend.worker_log()}"
        assert final["attempts"] == 2 and "queued again" in final["error"]
        # Resumed from the stored checkpoint (not step 0) and trained to the end.
        assert final["resumed_from_step"] == killed["checkpoint_step"]
        assert final["step"] == final["steps_total"] == 66
        sets = client.get("/v1/factor-sets").json()
        assert sets["count"] == 1 and sets["data"][0]["job_id"] == job["id"]
        assert sets["data"][0]["lineage"]["job"]["resumed_from_step"] == killed["checkpoint_step"]
    assert _count(backend, select(func.count()).select_from(FactorSet)) == 1
    checkpoints = select(func.count()).select_from(Artifact).where(Artifact.media_type == "application/x-kf-checkpoint")
    assert _count(backend, checkpoints) == 0


def test_cancel_stops_a_running_job_within_five_seconds(backend: Backend, teacher_files: TeacherFiles) -> None:
    with open_client(backend.settings) as client:
        if backend.uses_rq:
            backend.start_worker()
        teacher = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
        body = small_dsprites_job(teacher["id"], checkpoint_every=5)
        body["overrides"]["epochs"] = 30
        job = client.post("/v1/jobs", json=body).json()
        running = wait_for(
            lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["step"] > 5 and j,
            timeout=90,
            what="training to start",
        )
        pid = _running_pid(running)
        started = time.monotonic()
        r = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["cancel_requested_at"] is not None
        final = watch(client, job["id"], timeout=10, backend=backend)[-1]
        elapsed = time.monotonic() - started
        assert final["status"] == "cancelled" and final["stage"] == "cancelled"
        assert elapsed < 5.0, f"cancel took {elapsed:.1f} s"
        wait_for(lambda: not _alive(pid), timeout=5, what="the job's process to stop") if not backend.uses_rq else None
        step = final["step"]
        time.sleep(1.0)
        assert client.get(f"/v1/jobs/{job['id']}").json()["step"] == step  # no more training after the cancel
        assert client.get("/v1/factor-sets").json()["count"] == 0
        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    checkpoints = select(func.count()).select_from(Artifact).where(Artifact.media_type == "application/x-kf-checkpoint")
    assert _count(backend, checkpoints) == 0
