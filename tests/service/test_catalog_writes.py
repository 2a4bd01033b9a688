"""Catalog writes live in service/catalog only, behind typed functions; those functions on both databases.

The scan reads every module of service/ and kf_core/ outside service/catalog (and migrations/, which is not a
package of either) and counts ORM writes: ``session.add / add_all / delete / merge`` and SQLAlchemy's
``update() / delete() / insert()`` statements. A module that needs a write calls a function of service.catalog.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore
from service.catalog.checkpoints import CHECKPOINT, drop_checkpoint, is_recorded, replace_checkpoint
from service.catalog.leases import Lease, claim_job, fail_unstarted_job, finish_run, touch_run
from service.catalog.models import Artifact, FactorSet, Job, JobStatus
from service.catalog.versions import FactorEntry, create_finished_job, insert_factor_set

ROOT = Path(__file__).resolve().parents[2]
_SESSION_WRITES = {"add", "add_all", "delete", "merge", "bulk_save_objects", "bulk_insert_mappings"}
_STATEMENTS = {"update", "delete", "insert"}


def catalog_writes(source: str, where: str = "<source>") -> list[str]:
    """``where:line: call`` for each ORM write in ``source``."""
    tree = ast.parse(source)
    statements: set[str] = set()  # local names of sqlalchemy's update/delete/insert
    sqlalchemy: set[str] = set()  # local names of the sqlalchemy package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            statements |= {a.asname or a.name for a in node.names if a.name in _STATEMENTS}
        elif isinstance(node, ast.Import):
            sqlalchemy |= {a.asname or a.name for a in node.names if a.name == "sqlalchemy"}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        write = isinstance(f, ast.Name) and f.id in statements
        if isinstance(f, ast.Attribute):
            receiver = f.value.attr if isinstance(f.value, ast.Attribute) else getattr(f.value, "id", "")
            write |= f.attr in _SESSION_WRITES and "session" in receiver.lower()
            write |= f.attr in _STATEMENTS and receiver in sqlalchemy
        if write:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_the_scan_finds_each_kind_of_write() -> None:
    source = (
        "import sqlalchemy as sa\nfrom sqlalchemy import update as u, select\n"
        "session.add(row)\nself.session.delete(row)\ns2 = u(Job)\nsa.insert(Job)\nstore.delete(sha)\nseen.add(1)\n"
    )
    assert [w.split(":")[1] for w in catalog_writes(source)] == ["3", "4", "5", "6"]


def test_no_module_outside_service_catalog_writes_catalog_rows() -> None:
    writes, inside = [], []
    for package in ("service", "kf_core"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            found = catalog_writes(path.read_text(), str(rel))
            (inside if rel.parts[:2] == ("service", "catalog") else writes).extend(found)
    assert writes == [], "catalog writes outside service/catalog:\n" + "\n".join(writes)
    assert len(inside) > 10  # the catalog's own writes: the scan sees real code


def _claimed(session: Session, job: Job) -> Lease:
    lease = claim_job(session=session, job_id=job.id, worker="test:1")
    session.commit()
    assert lease is not None
    return lease


def test_replace_checkpoint_points_the_job_at_the_new_one_and_drops_the_old(
    session: Session, store: ArtifactStore, job: Job
) -> None:
    lease = _claimed(session, job)
    first = store.put_bytes(b"checkpoint 1")
    assert replace_checkpoint(session=session, lease=lease, stored=first, step=10) is None
    session.commit()
    second = store.put_bytes(b"checkpoint 2")
    assert replace_checkpoint(session=session, lease=lease, stored=second, step=20) == first.sha256
    session.commit()
    session.refresh(job)
    assert job.checkpoint_step == 20
    assert session.get(Artifact, job.checkpoint_artifact_id).sha256 == second.sha256  # type: ignore[union-attr]
    assert session.get(Artifact, job.checkpoint_artifact_id).media_type == CHECKPOINT  # type: ignore[union-attr]
    assert not is_recorded(session=session, sha256=first.sha256)
    assert is_recorded(session=session, sha256=second.sha256)


def test_drop_checkpoint_unlinks_and_deletes_the_row_once(session: Session, store: ArtifactStore, job: Job) -> None:
    lease = _claimed(session, job)
    stored = store.put_bytes(b"checkpoint")
    replace_checkpoint(session=session, lease=lease, stored=stored, step=3)
    session.commit()
    assert drop_checkpoint(session=session, job_id=job.id) == stored.sha256
    session.commit()
    session.refresh(job)
    assert job.checkpoint_artifact_id is None and not is_recorded(session=session, sha256=stored.sha256)
    assert drop_checkpoint(session=session, job_id=job.id) is None


def test_touch_and_finish_write_only_the_columns_given(session: Session, job: Job) -> None:
    lease = _claimed(session, job)
    touch_run(session=session, lease=lease, stage="training", epochs=3, steps_total=30)
    touch_run(session=session, lease=lease, epoch=1, step=10, progress=1 / 3, metrics={"loss": 0.5})
    session.commit()
    session.refresh(job)
    assert (job.stage, job.epochs, job.steps_total, job.step, job.metrics) == ("training", 3, 30, 10, {"loss": 0.5})
    finish_run(session=session, lease=lease, status=JobStatus.succeeded, stage="done", progress=1.0)
    session.commit()
    session.refresh(job)
    assert (job.status, job.progress, job.lease, job.error) == ("succeeded", 1.0, None, None)


def test_fail_unstarted_job_fails_only_a_queued_job(session: Session, job: Job) -> None:
    assert fail_unstarted_job(session=session, job_id=job.id, error="broken environment")
    session.commit()
    session.refresh(job)
    assert (job.status, job.error) == ("failed", "broken environment")
    assert not fail_unstarted_job(session=session, job_id=job.id, error="again")


def test_record_enqueued_and_delete_job(session: Session, job: Job) -> None:
    catalog.record_enqueued(job=job, rq_job_id="kf-1")
    session.commit()
    session.refresh(job)
    assert job.rq_job_id == "kf-1"
    catalog.delete_job(session=session, job=job)
    session.commit()
    assert session.get(Job, job.id) is None


def _version(session: Session, store: ArtifactStore, job: Job) -> FactorSet:
    part = catalog.record_artifact(session=session, stored=store.put_bytes(b"part"), media_type="application/onnx")
    return insert_factor_set(
        session=session,
        job=job,
        config={},
        metrics={"tasks": {}},
        input_spec={"shape": [None, 1, 8, 8]},
        ckn=part,
        manifest=part,
        report=part,
        factors=[
            FactorEntry(task="digit", output="digit", classes=[0, 1], class_names=["0", "1"], artifact=part, metrics={})
        ],
    )


def test_insert_factor_set_numbers_versions_and_keeps_the_transaction_usable_on_a_clash(
    session: Session, store: ArtifactStore, job: Job
) -> None:
    first = _version(session, store, job)
    session.commit()
    assert (first.name, first.version, [f.task for f in first.factors]) == ("fs", 1, ["digit"])
    lineage = create_finished_job(
        session=session,
        teacher_id=job.teacher_id,
        dataset_id=job.dataset_id,
        recipe={},
        factor_set_name="fs",
        stage="imported",
    )
    assert (lineage.status, lineage.stage, lineage.progress) == ("succeeded", "imported", 1.0)
    second = _version(session, store, lineage)
    session.commit()
    assert second.version == 2
    with pytest.raises(IntegrityError):  # factor_set.job_id is unique: a job registers one version
        _version(session, store, lineage)
    assert session.scalars(select(FactorSet.version).where(FactorSet.name == "fs")).all() is not None  # still usable
    session.rollback()
    assert sorted(session.scalars(select(FactorSet.version).where(FactorSet.name == "fs"))) == [1, 2]
