"""Registering a factor set: all-or-nothing, verified, and at most once per job (both databases)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.db import make_engine, make_sessionmaker
from service.catalog.leases import Lease, claim_job
from service.catalog.models import Artifact, Factor, FactorSet, Job
from service.errors import ArtifactCorruptError, LeaseLostError
from service.jobs.register import register_factor_set
from tests.factories import exported_run_dir


@pytest.fixture
def factory(migrated: Any) -> Any:
    engine = make_engine(migrated)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return tmp_path / "run", exported_run_dir(tmp_path / "run")


def _claim(session: Session, job: Job) -> Lease:
    lease = claim_job(session=session, job_id=job.id, worker="w:1")
    session.commit()
    assert lease is not None
    return lease


def _counts(session: Session) -> tuple[int, int, int]:
    session.expire_all()
    return tuple(int(session.scalar(select(func.count()).select_from(m)) or 0) for m in (FactorSet, Factor, Artifact))  # type: ignore[return-value]


def test_registers_parts_metrics_and_finishes_the_job_once(
    session: Session,
    job: Job,
    factory: Any,
    store: Any,
    run_dir: tuple[Path, dict[str, Any]],
) -> None:
    lease = _claim(session, job)
    fs = register_factor_set(factory=factory, store=store, lease=lease, run_dir=run_dir[0], report=run_dir[1])
    assert (fs.name, fs.version, fs.job_id) == ("fs", 1, job.id)
    manifest = json.loads((run_dir[0] / "parts" / "manifest.json").read_text())
    with factory() as s:
        stored = s.get(FactorSet, fs.id)
        assert [f.task for f in stored.factors] == ["low", "high"]
        assert [f.artifact.sha256 for f in stored.factors] == [manifest["tasks"][t]["sha256"] for t in ("low", "high")]
        assert stored.ckn_artifact.sha256 == manifest["ckn"]["sha256"]
        assert stored.factors[0].metrics["factor_accuracy"] == 0.8
        for artifact in (stored.ckn_artifact, stored.manifest_artifact, stored.report_artifact):
            store.verify(artifact.sha256, size=artifact.size_bytes)
        assert (stored.job.status, stored.job.stage, stored.job.progress) == ("succeeded", "done", 1.0)
    with pytest.raises(LeaseLostError):  # the same run cannot register twice: the job is no longer its
        register_factor_set(factory=factory, store=store, lease=lease, run_dir=run_dir[0], report=run_dir[1])
    assert _counts(session) == (1, 2, 6)  # artifacts: teacher, ckn, 2 parts, manifest, report


def test_the_database_refuses_a_second_factor_set_for_one_job(
    session: Session,
    job: Job,
    factory: Any,
    store: Any,
    run_dir: tuple[Path, dict[str, Any]],
) -> None:
    fs = register_factor_set(
        factory=factory, store=store, lease=_claim(session, job), run_dir=run_dir[0], report=run_dir[1]
    )
    with factory() as s:
        orig = s.get(FactorSet, fs.id)
        twin = FactorSet(
            name="other",
            version=1,
            teacher_id=orig.teacher_id,
            dataset_id=orig.dataset_id,
            job_id=orig.job_id,
            config={},
            metrics={},
            input_spec={},
            ckn_artifact_id=orig.ckn_artifact_id,
            manifest_artifact_id=orig.manifest_artifact_id,
            report_artifact_id=orig.report_artifact_id,
        )
        s.add(twin)
        with pytest.raises(IntegrityError):
            s.commit()


def test_a_cancel_before_registration_registers_nothing(
    session: Session,
    job: Job,
    factory: Any,
    store: Any,
    run_dir: tuple[Path, dict[str, Any]],
) -> None:
    lease = _claim(session, job)
    catalog.request_cancel(session=session, job_id=job.id)
    session.commit()
    with pytest.raises(LeaseLostError, match="cancelled"):
        register_factor_set(factory=factory, store=store, lease=lease, run_dir=run_dir[0], report=run_dir[1])
    assert _counts(session)[:2] == (0, 0)
    session.refresh(job)
    assert job.status == "running"  # the run itself marks it cancelled next


def test_a_part_that_changed_after_export_registers_nothing(
    session: Session,
    job: Job,
    factory: Any,
    store: Any,
    run_dir: tuple[Path, dict[str, Any]],
) -> None:
    part = run_dir[0] / "parts" / "task_high.onnx"
    part.write_bytes(part.read_bytes() + b"\0")
    with pytest.raises(ArtifactCorruptError, match=r"task_high\.onnx"):
        register_factor_set(
            factory=factory, store=store, lease=_claim(session, job), run_dir=run_dir[0], report=run_dir[1]
        )
    assert _counts(session) == (0, 0, 1)  # only the teacher's artifact row


CHECKPOINT = "application/x-kf-checkpoint"


def _checkpoints(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(Artifact).where(Artifact.media_type == CHECKPOINT)) or 0)


def test_success_deletes_the_jobs_checkpoint_in_the_same_transaction(
    session: Session, job: Job, factory: Any, store: Any, run_dir: tuple[Path, dict[str, Any]]
) -> None:
    lease = _claim(session, job)
    stored = store.put_bytes(b"a checkpoint's bytes")
    row = catalog.record_artifact(session=session, stored=stored, media_type=CHECKPOINT)
    session.flush()
    session.get(Job, job.id).checkpoint_artifact_id = row.id  # type: ignore[union-attr]
    session.commit()
    assert _checkpoints(session) == 1

    register_factor_set(factory=factory, store=store, lease=lease, run_dir=run_dir[0], report=run_dir[1])
    assert _checkpoints(session) == 0  # committed with the job's success: no later cleanup step to miss
    assert session.get(Job, job.id).checkpoint_artifact_id is None  # type: ignore[union-attr]
    assert not store.exists(stored.sha256)


def test_a_checkpoint_whose_row_is_not_written_is_not_kept(
    session: Session, job: Job, store: Any, factory: Any, tmp_path: Path
) -> None:
    from kf_core import TrainState
    from service.jobs.progress import JobProgress, RunContext, RunSignals

    lease = _claim(session, job)
    progress = JobProgress(RunContext(factory, store, RunSignals(), 0.1), lease)
    first = tmp_path / "first.pt"
    first.write_bytes(b"checkpoint at step 8")
    progress.on_checkpoint(TrainState(global_step=8), first)
    assert _checkpoints(session) == 1
    catalog.get_job(session=session, job_id=job.id).lease = "another run's"  # this run loses the job
    session.commit()
    second = tmp_path / "second.pt"
    second.write_bytes(b"checkpoint at step 16")
    with pytest.raises(LeaseLostError):
        progress.on_checkpoint(TrainState(global_step=16), second)
    assert _checkpoints(session) == 1
    assert not store.exists(hashlib.sha256(b"checkpoint at step 16").hexdigest())  # stored, unrecorded: deleted
    assert store.exists(hashlib.sha256(b"checkpoint at step 8").hexdigest())  # the recorded one stays
