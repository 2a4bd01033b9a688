"""Distributed factorization jobs (``processes``: 2), run for real by the inline runner on SQLite.

- A digits job in 2 processes registers a factor set whose combined 10-way accuracy is within 1 point of the same
  job in 1 process (same teacher, data and budget).
- SIGKILL of the job's process mid-training: its peer process stops with it (a lost process fails the group), the
  runner retries the job, the retry resumes from the stored checkpoint in 2 processes and registers exactly once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from kf_core.pipeline import run_teacher_fit
from kf_core.recipes import get_recipe
from tests.conftest import open_client
from tests.service.helpers import (
    DIGIT_GROUPS,
    Backend,
    TeacherFiles,
    small_dsprites_job,
    upload_teacher,
    wait_for,
    watch,
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite-inline"], indirect=True)]


@pytest.fixture(scope="module")
def digits_teacher_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained digits teacher (the recipe's MLP, 10 epochs), as the ONNX file users upload."""
    out = tmp_path_factory.mktemp("digits-teacher")
    run_teacher_fit(get_recipe("digits").with_overrides(epochs=10), out)
    return out / "teacher.onnx"


def _peers_of(job_id: str) -> list[int]:
    """Pids of live peer processes of the job (their command line names the job's work directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if "service.jobs.peers" in cmd and job_id in cmd and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_two_processes_match_one_within_a_point(backend: Backend, digits_teacher_onnx: Path) -> None:
    with open_client(backend.settings) as client:
        teacher = upload_teacher(client, digits_teacher_onnx, {"name": "digits-mlp", "tasks": DIGIT_GROUPS}).json()
        combined = {}
        for n in (1, 2):
            body = {"teacher_id": teacher["id"], "dataset": "digits", "name": f"digits-{n}", "processes": n}
            body["overrides"] = {"epochs": 15}
            r = client.post("/v1/jobs", json=body)
            assert r.status_code == 202, r.text
            job = watch(client, r.json()["id"], timeout=300, backend=backend)[-1]
            assert job["status"] == "succeeded", job["error"]
            fs = client.get(f"/v1/factor-sets/{job['factor_set_id']}").json()
            assert fs["config"]["train"]["processes"] == n
            combined[n] = fs["metrics"]["assembly"]["combined"]["factor_accuracy"]
    assert combined[1] > 0.9, combined  # both really learned the ten digits
    assert abs(combined[2] - combined[1]) <= 0.01, combined


def test_bad_process_counts_are_refused_with_the_fix(backend: Backend, teacher_files: TeacherFiles) -> None:
    with open_client(backend.settings) as client:
        teacher = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
        body = small_dsprites_job(teacher["id"])
        r = client.post("/v1/jobs", json={**body, "processes": 3})  # batch_size 32 does not split over 3
        assert r.status_code == 422 and "multiple of processes" in r.text, r.text
        r = client.post("/v1/jobs", json={**body, "processes": 0})
        assert r.status_code == 422 and "processes" in r.text, r.text
        assert client.get("/v1/jobs").json()["count"] == 0


def test_a_killed_two_process_job_resumes_and_registers_once(backend: Backend, teacher_files: TeacherFiles) -> None:
    with open_client(backend.settings) as client:
        teacher = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
        body = {**small_dsprites_job(teacher["id"], checkpoint_every=8), "processes": 2}
        job = client.post("/v1/jobs", json=body).json()

        def checkpointed() -> dict[str, Any] | None:
            j: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}").json()
            return j if j["status"] == "running" and (j["checkpoint_step"] or 0) >= 8 else None

        before = wait_for(checkpointed, timeout=120, what="a stored checkpoint", interval=0.02)
        peers = _peers_of(job["id"])
        assert len(peers) == 1, peers  # rank 1 beside the job's own process
        os.kill(int(before["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        # The peer loses its group and exits by itself (connection closed, or the collective timeout).
        wait_for(lambda: not (set(_peers_of(job["id"])) & set(peers)), timeout=60, what="the peer to stop")

        final = watch(client, job["id"], timeout=240, backend=backend)[-1]
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] == 2
        assert final["resumed_from_step"] is not None and final["resumed_from_step"] >= before["checkpoint_step"]
        assert final["step"] == final["steps_total"] == 66
        sets = client.get("/v1/factor-sets").json()
        assert sets["count"] == 1 and sets["data"][0]["job_id"] == job["id"]
        assert sets["data"][0]["config"]["train"]["processes"] == 2
    assert not _peers_of(job["id"])
