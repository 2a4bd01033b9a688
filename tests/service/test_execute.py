"""Pieces of a job run that are hard to provoke through a real training: the cancel watchdog and shutdown."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from kf_core import pipeline
from service.catalog import queries as catalog
from service.catalog.db import make_engine, make_sessionmaker
from service.catalog.leases import claim_job
from service.catalog.models import Job
from service.jobs import run as execute
from tests.conftest import open_client
from tests.factories import tiny_job_body
from tests.service.helpers import DIGIT_GROUPS, Backend, TeacherFiles, small_dsprites_job, upload_teacher, wait_for


def test_a_run_that_ignores_a_cancel_is_stopped_hard(
    session: Any, job: Job, migrated: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training thread is stuck (here: it does nothing at all); the heartbeat thread still stops the job."""
    settings = migrated.model_copy(update={"cancel_grace_s": 0.3, "heartbeat_interval_s": 0.2})
    engine = make_engine(settings)
    lease = claim_job(session=session, job_id=job.id, worker="w:1")
    session.commit()
    assert lease is not None
    run = execute._Run(settings, make_sessionmaker(engine), job.id)
    heartbeat = execute._Heartbeat(run, lease)
    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        heartbeat.stop.set()  # end the heartbeat thread instead of the test process

    monkeypatch.setattr(os, "_exit", fake_exit)
    heartbeat.start()
    try:
        catalog.request_cancel(session=session, job_id=job.id)
        session.commit()
        started = time.monotonic()
        wait_for(lambda: exits, timeout=5, what="the hard stop")
        assert exits == [0] and time.monotonic() - started < 5
        session.expire_all()
        stopped = session.get(Job, job.id)
        assert stopped is not None and (stopped.status, stopped.lease) == ("cancelled", None)
    finally:
        heartbeat.stop.set()
        heartbeat.join(timeout=5)
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite-inline"], indirect=True)
def test_api_shutdown_hands_running_jobs_back_to_the_queue(backend: Backend, teacher_files: TeacherFiles) -> None:
    with open_client(backend.settings) as client:
        teacher = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
        body = small_dsprites_job(teacher["id"], checkpoint_every=4)
        body["overrides"]["epochs"] = 30
        job = client.post("/v1/jobs", json=body).json()
        wait_for(
            lambda: (client.get(f"/v1/jobs/{job['id']}").json()["checkpoint_step"] or 0) > 0,
            timeout=90,
            what="a checkpoint",
        )
        client.app.state.runner.stop(terminate=True)  # what the lifespan does when the API shuts down
        back = client.get(f"/v1/jobs/{job['id']}").json()
    assert (back["status"], back["stage"], back["attempts"]) == ("queued", "interrupted", 0)  # not counted
    assert back["checkpoint_step"] > 0 and back["error"] is None  # the next start resumes from here


@pytest.mark.slow
def test_an_assembled_graph_that_drifts_from_torch_is_not_registered(
    migrated: Any, teacher_files: TeacherFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run assembles every task and compares it with torch; beyond the export tolerance the job fails.

    A correct export never drifts that far, so the fault is injected: every weight of the assembled graph moves
    by 1e-3 before the comparison (the real pipeline, teacher, catalog and artifact store otherwise).
    """
    real_assemble = pipeline.assemble

    def drifting(*args: Any, **kwargs: Any) -> onnx.ModelProto:
        graph = real_assemble(*args, **kwargs)
        for init in graph.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32:
                init.CopyFrom(numpy_helper.from_array(w + np.float32(1e-3), init.name))
        return graph

    monkeypatch.setattr(pipeline, "assemble", drifting)
    with open_client(migrated, run_jobs=False) as client:
        teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "t", "tasks": DIGIT_GROUPS}).json()
        job = client.post("/v1/jobs", json=tiny_job_body(teacher["id"])).json()
        engine = make_engine(migrated)
        try:
            status = execute._Run(migrated, make_sessionmaker(engine), uuid.UUID(job["id"])).run()
        finally:
            engine.dispose()
        final = client.get(f"/v1/jobs/{job['id']}").json()
        assert status == final["status"] == "failed"
        assert final["attempts"] == 1  # a retry would drift the same way
        assert final["error"].startswith("ExportMismatchError: assembly drift: the assembled graph's logits_")
        assert "beyond the export tolerance 0.0001" in final["error"]
        assert client.get("/v1/factor-sets").json()["count"] == 0
