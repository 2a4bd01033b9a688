"""Acceptance 1, through HTTP only: upload a teacher, submit a small dSprites job, watch its progress move, and
find the factor set in the catalog with metrics, lineage and sha256-verified artifacts. Runs on SQLite with the
inline runner and on PostgreSQL + Redis with a real ``kf worker`` process.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import onnx
import pytest

from tests.conftest import open_client
from tests.factories import DSPRITES_HEADS
from tests.service.helpers import Backend, TeacherFiles, small_dsprites_job, upload_teacher, wait_for, watch

pytestmark = pytest.mark.slow


def test_dsprites_job_end_to_end_over_http(backend: Backend, teacher_files: TeacherFiles) -> None:
    with open_client(backend.settings) as client:
        if backend.uses_rq:
            backend.start_worker()
        r = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"})
        assert r.status_code == 201, r.text
        teacher = r.json()
        r = client.post("/v1/jobs", json=small_dsprites_job(teacher["id"]))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued"
        job_id = r.json()["id"]

        states = watch(client, job_id, timeout=120, backend=backend)
        job = states[-1]
        assert job["status"] == "succeeded", f"{job['error']}\n{backend.worker_log()}"
        # Progress moved: training steps were reported in between, in order, ending complete.
        steps = [s["step"] for s in states if s["stage"] == "training"]
        assert len({s for s in steps if 0 < s < job["steps_total"]}) >= 2, states
        assert steps == sorted(steps)
        assert "training" in {s["stage"] for s in states}
        assert (job["progress"], job["step"], job["steps_total"], job["epoch"]) == (1.0, 66, 66, 2)
        assert job["attempts"] == 1 and job["resumed_from_step"] is None and job["finished_at"] is not None
        assert set(job["metrics"]) >= {"loss", "shape/train_acc"}

        # The factor set is in the catalog, with metrics per task and its lineage.
        sets = client.get("/v1/factor-sets").json()
        assert sets["count"] == 1
        fs = client.get(f"/v1/factor-sets/{job['factor_set_id']}").json()
        assert fs == sets["data"][0]
        assert (fs["name"], fs["version"], fs["job_id"], fs["teacher_id"]) == (
            "dsprites-small",
            1,
            job_id,
            teacher["id"],
        )
        assert [f["task"] for f in fs["factors"]] == list(DSPRITES_HEADS)
        for factor in fs["factors"]:
            assert {"teacher_accuracy", "factor_accuracy", "gap_points"} <= set(factor["metrics"])
            assert len(factor["classes"]) == DSPRITES_HEADS[factor["task"]]
        assert fs["metrics"]["assembly"]["max_abs_diff"] < 1e-4
        assert set(fs["metrics"]["tasks"]) == set(DSPRITES_HEADS)
        assert fs["lineage"]["teacher"]["sha256"] == teacher["artifact"]["sha256"]
        assert fs["lineage"]["dataset"]["source"] == "dsprites" and fs["lineage"]["dataset"]["spec"]["samples"] == 1536
        assert fs["lineage"]["job"]["id"] == job_id
        assert fs["config"]["train"]["epochs"] == 2
        assert fs["input_spec"]["shape"] == [None, 1, 64, 64]

        # Every artifact downloads, hashes to its sha256, and the parts are the ONNX graphs the manifest lists.
        def download(artifact: dict[str, Any]) -> bytes:
            r = client.get(artifact["url"])
            assert r.status_code == 200
            assert hashlib.sha256(r.content).hexdigest() == artifact["sha256"] == r.headers["x-content-sha256"]
            assert len(r.content) == artifact["size_bytes"]
            return bytes(r.content)

        manifest = json.loads(download(fs["manifest_artifact"]))
        report = json.loads(download(fs["report_artifact"]))
        assert report["tasks"] == fs["metrics"]["tasks"]
        assert manifest["ckn"]["sha256"] == fs["ckn_artifact"]["sha256"]
        onnx.checker.check_model(onnx.load_model_from_string(download(fs["ckn_artifact"])))
        for factor in fs["factors"]:
            assert manifest["tasks"][factor["task"]]["sha256"] == factor["artifact"]["sha256"]
            part = onnx.load_model_from_string(download(factor["artifact"]))
            assert [o.name for o in part.graph.output] == ["logits"]

        # The job's checkpoint was deleted once the factor set was registered.
        assert job["checkpoint_step"] is not None
        assert wait_for(lambda: _no_checkpoint_files(backend), timeout=5, what="checkpoint cleanup")


def _no_checkpoint_files(backend: Backend) -> bool:
    from sqlalchemy import select

    from service.catalog.db import make_engine
    from service.catalog.models import Artifact, Job

    engine = make_engine(backend.settings)
    try:
        with engine.connect() as conn:
            media = list(conn.scalars(select(Artifact.media_type)))
            pointers = list(conn.scalars(select(Job.checkpoint_artifact_id)))
    finally:
        engine.dispose()
    return "application/x-kf-checkpoint" not in media and pointers == [None]
