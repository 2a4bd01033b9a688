"""Jobs that fail: the error is kept, retries are bounded, and nothing is registered.

- A corrupted teacher file is an error no retry can fix: the job fails at once, saying which artifact is corrupt.
- A failure that may pass (here: the scratch directory cannot be created) is retried up to ``max_attempts``,
  then the job fails with every attempt accounted for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.catalog.artifacts import open_store
from tests.conftest import open_client
from tests.factories import tiny_job_body
from tests.service.helpers import DIGIT_GROUPS, Backend, TeacherFiles, corrupt_artifact, upload_teacher, watch

pytestmark = pytest.mark.slow


def test_corrupt_teacher_artifact_fails_the_job_once_with_the_reason(
    backend: Backend, teacher_files: TeacherFiles
) -> None:
    with open_client(backend.settings) as client:
        if backend.uses_rq:
            backend.start_worker()
        teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "t", "tasks": DIGIT_GROUPS}).json()
        sha = teacher["artifact"]["sha256"]
        corrupt_artifact(open_store(backend.settings), sha, lambda b: b[:-10] + b"0123456789")  # bit rot
        assert client.get(f"/v1/artifacts/{sha}").status_code == 500  # never served either
        job = client.post("/v1/jobs", json=tiny_job_body(teacher["id"])).json()
        final = watch(client, job["id"], timeout=60, backend=backend)[-1]
        assert final["status"] == "failed"
        assert final["attempts"] == 1  # not retried: a retry would read the same bytes
        assert final["error"].startswith("ArtifactCorruptError: artifact " + sha)
        assert client.get("/v1/factor-sets").json()["count"] == 0


def test_failures_are_retried_up_to_max_attempts(backend: Backend, teacher_files: TeacherFiles, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("the work dir cannot be created here")
    settings = backend.settings.model_copy(update={"work_dir": blocker / "work"})
    backend.settings = settings  # workers started from now on get the broken work dir too
    with open_client(settings) as client:
        if backend.uses_rq:
            backend.start_worker()
        teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "t", "tasks": DIGIT_GROUPS}).json()
        job = client.post("/v1/jobs", json=tiny_job_body(teacher["id"], max_attempts=2)).json()
        final: dict[str, Any] = watch(client, job["id"], timeout=60, backend=backend)[-1]
        assert final["status"] == "failed", final
        assert final["attempts"] == 2
        assert final["error"].startswith("attempt 2 of 2 failed, no attempts left: NotADirectoryError")
        assert client.get("/v1/factor-sets").json()["count"] == 0
