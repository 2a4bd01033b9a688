"""Retire and reclaim (issue 16, acceptance 4): deleting a version frees exactly the artifacts nothing else
references (bytes counted; a CKN shared with another version stays); a teacher in use cannot be deleted and the
refusal names its factor sets; garbage collection during a running job removes nothing the job needs, and a
registration that races with the collector puts back what it collected. SQLite with a local store, PostgreSQL
with the S3 store (the ``settings`` fixture pairs them)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.catalog import aliases as catalog_aliases
from service.catalog import queries as catalog
from service.catalog.gc import collect
from service.catalog.leases import claim_job
from service.catalog.models import Artifact, Assembly, FactorSet
from tests.conftest import open_client
from tests.factories import queued_job
from tests.service.serving import Trained, register, train_small_factor_set


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Trained]:
    return (
        train_small_factor_set(tmp_path_factory.mktemp("r1"), seed=0),
        train_small_factor_set(tmp_path_factory.mktemp("r2"), seed=1),
    )


def _sharing_ckn(trained_pair: tuple[Trained, Trained], out: Path) -> Trained:
    """A run whose CKN and four task parts are version 1's, and whose "shape" part (and report) is new."""
    first, second = trained_pair
    shutil.copytree(first.run_dir, out)
    manifest = json.loads((out / "parts" / "manifest.json").read_text())
    theirs = json.loads((second.run_dir / "parts" / "manifest.json").read_text())["tasks"]["shape"]
    shutil.copy(second.run_dir / "parts" / theirs["file"], out / "parts" / manifest["tasks"]["shape"]["file"])
    manifest["tasks"]["shape"]["sha256"] = theirs["sha256"]
    (out / "parts" / "manifest.json").write_text(json.dumps(manifest))
    report = {**first.report, "recipe": "second"}
    (out / "report.json").write_text(json.dumps(report))
    return Trained(out, report, first.model, first.x)


def _artifact_ids(fs: FactorSet) -> set[Any]:
    ids = {fs.ckn_artifact_id, fs.manifest_artifact_id, fs.report_artifact_id}
    return ids | {f.artifact_id for f in fs.factors}


@pytest.fixture
def two_versions(
    trained_pair: tuple[Trained, Trained], session: Any, job: Any, factory: Any, store: Any, tmp_path: Path
) -> list[Any]:
    v1 = register(trained_pair[0], session=session, job=job, factory=factory, store=store)
    shared = _sharing_ckn(trained_pair, tmp_path / "shared-run")
    second = queued_job(session, teacher_id=job.teacher_id, dataset_id=job.dataset_id)
    v2 = register(shared, session=session, job=second, factory=factory, store=store)
    assert v1.ckn_artifact.sha256 == v2.ckn_artifact.sha256
    return [v1, v2]


def test_deleting_a_version_frees_exactly_the_artifacts_no_longer_referenced(
    two_versions: list[Any], migrated: Any, session: Any, store: Any
) -> None:
    v1, v2 = two_versions
    with open_client(migrated, run_jobs=False) as api:
        graph = api.post("/v1/assemblies", json={"factor_set": "fs:1", "tasks": ["shape", "scale"]})
        assert graph.status_code == 200, graph.text
        assert api.post("/v1/predict", json={"factor_set": "fs:1", "inputs": v1_x(two_versions)}).status_code == 200
        rows = {a.id: a for a in session.scalars(select(Artifact))}
        graphs = set(session.scalars(select(Assembly.graph_artifact_id).where(Assembly.factor_set_id == v1.id)))
        assert len(graphs) == 1
        only_v1 = (_artifact_ids(v1) | graphs) - _artifact_ids(v2)
        want = {rows[i].sha256: rows[i].size_bytes for i in only_v1}
        assert len(want) == 4  # v1's own "shape" part, its manifest and report, and its stored assembly graph
        stored_before = {sha for sha, _, _ in store.list_stored()}

        r = api.delete("/v1/factor-sets/fs:1")
        assert r.status_code == 200, r.text
        freed = r.json()["freed"]
        assert r.json()["deleted"] == "fs:1"
        assert set(freed["sha256"]) == set(want)
        assert (freed["count"], freed["bytes"]) == (len(want), sum(want.values()))
        stored_after = {sha for sha, _, _ in store.list_stored()}
        assert stored_before - stored_after == set(want)
        assert v2.ckn_artifact.sha256 in stored_after  # the CKN both versions used stays
        for sha in (v2.ckn_artifact.sha256, v2.manifest_artifact.sha256, *(f.artifact.sha256 for f in v2.factors)):
            store.verify(sha)

        # Gone for every client of this replica at once; version 2 serves on.
        assert api.get("/v1/factor-sets/fs:1").status_code == 404
        assert api.post("/v1/predict", json={"factor_set": "fs:1", "inputs": v1_x(two_versions)}).status_code == 404
        assert api.post("/v1/predict", json={"factor_set": "fs:2", "inputs": v1_x(two_versions)}).status_code == 200
        assert all(r.factor_set.id != v1.id for r in api.app.state.runtime.resident_sets())
        assert api.delete("/v1/factor-sets/fs:1").status_code == 404
        # Nothing else is garbage now.
        assert api.post("/v1/gc", params={"dry_run": True}).json()["count"] == 0


def v1_x(versions: list[Any]) -> Any:
    del versions
    import numpy as np

    return np.zeros((1, 1, 64, 64), dtype=np.float32).tolist()


def test_a_teacher_in_use_is_refused_naming_its_factor_sets_and_an_aliased_version_naming_its_alias(
    two_versions: list[Any], migrated: Any, session: Any, job: Any, store: Any
) -> None:
    catalog_aliases.set_alias(session=session, name="fs", alias="prod", version=2)
    session.commit()
    teacher_sha = catalog.get_teacher(session=session, teacher_id=job.teacher_id).artifact.sha256
    with open_client(migrated, run_jobs=False) as api:
        refused = api.delete(f"/v1/teachers/{job.teacher_id}")
        assert refused.status_code == 409
        assert "fs:1" in refused.json()["detail"] and "fs:2" in refused.json()["detail"]

        aliased = api.delete("/v1/factor-sets/fs:2")
        assert aliased.status_code == 409 and "fs@prod" in aliased.json()["detail"]
        assert api.delete("/v1/factor-sets/fs@prod").status_code == 422  # an alias moves: name the version
        assert api.delete("/v1/factor-sets/fs").status_code == 422
        dataset = api.delete(f"/v1/datasets/{job.dataset_id}")
        assert dataset.status_code == 409 and "fs:1" in dataset.json()["detail"]

        assert api.delete("/v1/factor-sets/fs/aliases/prod").status_code == 200
        assert api.delete("/v1/factor-sets/fs:1").status_code == 200
        everything = api.delete(f"/v1/factor-sets/{two_versions[1].id}")
        assert everything.status_code == 200
        assert two_versions[1].ckn_artifact.sha256 in everything.json()["freed"]["sha256"]  # last user gone

        gone = api.delete(f"/v1/teachers/{job.teacher_id}")
        assert gone.status_code == 200, gone.text
        assert gone.json()["freed"]["sha256"] == [teacher_sha]
        assert api.get(f"/v1/teachers/{job.teacher_id}").status_code == 404
        assert api.delete(f"/v1/datasets/{job.dataset_id}").status_code == 200
        assert not store.exists(teacher_sha)


def test_a_dataset_with_a_running_job_is_refused_naming_the_job(migrated: Any, session: Any, job: Any) -> None:
    claim_job(session=session, job_id=job.id, worker="w:1")
    session.commit()
    with open_client(migrated, run_jobs=False) as api:
        r = api.delete(f"/v1/datasets/{job.dataset_id}")
        assert r.status_code == 409 and str(job.id) in r.json()["detail"]
        r = api.delete(f"/v1/teachers/{job.teacher_id}")
        assert r.status_code == 409 and str(job.id) in r.json()["detail"]


def test_a_version_an_extension_job_reads_is_kept_while_the_job_is_queued_or_running(
    trained_pair: tuple[Trained, Trained], migrated: Any, session: Any, job: Any, factory: Any, store: Any
) -> None:
    from service.catalog.models import EXTEND_KEY, Job, JobStatus

    base = register(trained_pair[0], session=session, job=job, factory=factory, store=store)
    extend = {EXTEND_KEY: {"factor_set_id": str(base.id), "name": "fs", "version": 1}}
    other = queued_job(session, teacher_id=job.teacher_id, dataset_id=job.dataset_id, recipe={"x": 1})
    extension = queued_job(session, teacher_id=job.teacher_id, dataset_id=job.dataset_id, recipe=extend)
    needs = {base.ckn_artifact.sha256, base.manifest_artifact.sha256, *(f.artifact.sha256 for f in base.factors)}
    with open_client(migrated, run_jobs=False) as api:
        queued = api.delete("/v1/factor-sets/fs:1")
        assert queued.status_code == 409, queued.text
        assert str(extension.id) in queued.json()["detail"] and str(other.id) not in queued.json()["detail"]
        assert claim_job(session=session, job_id=extension.id, worker="w:2") is not None
        session.commit()
        running = api.delete(f"/v1/factor-sets/{base.id}")
        assert running.status_code == 409 and str(extension.id) in running.json()["detail"]
        assert api.get("/v1/factor-sets/fs:1").status_code == 200

        # The collector, during the run, leaves every file the job reads from the base version.
        assert api.post("/v1/gc", params={"dry_run": True}).json()["count"] == 0
        report = collect(factory=factory, store=store, grace_s=0, margin_s=1)
        assert not needs & set(report.sha256)
        for sha in needs:
            store.verify(sha)

        # Once the job has finished, the version can go.
        session.get(Job, extension.id).status = JobStatus.failed.value
        session.commit()
        gone = api.delete("/v1/factor-sets/fs:1")
        assert gone.status_code == 200, gone.text
        assert base.ckn_artifact.sha256 in gone.json()["freed"]["sha256"]


def test_gc_during_a_running_job_removes_nothing_it_needs(
    trained_pair: tuple[Trained, Trained], session: Any, job: Any, factory: Any, store: Any
) -> None:
    from service.jobs.register import register_factor_set

    stale = store.put_bytes(b"an upload that was never registered")
    time.sleep(1.5)  # the object store dates objects to the second
    lease = claim_job(session=session, job_id=job.id, worker="w:1")
    session.commit()
    assert lease is not None
    checkpoint = store.put_bytes(b"checkpoint of the running job")
    row = catalog.record_artifact(session=session, stored=checkpoint, media_type="application/octet-stream")
    session.flush()
    session.get(type(job), job.id).checkpoint_artifact_id = row.id
    session.commit()
    # What the job wrote before registering: its parts are in the store, no row points at them yet.
    parts = trained_pair[0].run_dir / "parts"
    written = [store.put_file(p).sha256 for p in sorted(parts.iterdir())]

    dry = collect(factory=factory, store=store, dry_run=True, grace_s=0, margin_s=1)
    report = collect(factory=factory, store=store, grace_s=0, margin_s=1)
    assert dry.sha256 == report.sha256 == [stale.sha256]
    assert not store.exists(stale.sha256)
    for sha in [*written, checkpoint.sha256, session.get(type(job), job.id).teacher.artifact.sha256]:
        assert store.exists(sha), sha

    fs = register_factor_set(
        factory=factory, store=store, lease=lease, run_dir=trained_pair[0].run_dir, report=trained_pair[0].report
    )
    for sha in [fs.ckn_artifact.sha256, *(f.artifact.sha256 for f in fs.factors)]:
        store.verify(sha)


def test_a_registration_puts_back_what_the_collector_took_between_its_upload_and_its_rows(
    trained_pair: tuple[Trained, Trained],
    session: Any,
    job: Any,
    factory: Any,
    store: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.jobs import register as registration

    first = register(trained_pair[0], session=session, job=job, factory=factory, store=store)
    ckn_sha = first.ckn_artifact.sha256
    # Version 1 is deleted from the catalog; its artifact rows stay until the collector runs.
    from service.catalog.retire import delete_factor_set

    with factory() as s:
        delete_factor_set(session=s, ref="fs:1")
        s.commit()
    again = queued_job(session, teacher_id=job.teacher_id, dataset_id=job.dataset_id)
    real_insert = registration._insert
    collected: list[Any] = []

    def collector_runs_first(*args: Any, **kwargs: Any) -> Any:
        if not collected:  # between the upload (done) and the registering transaction
            collected.append(collect(factory=factory, store=store, grace_s=0))
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(registration, "_insert", collector_runs_first)
    lease = claim_job(session=session, job_id=again.id, worker="w:2")
    session.commit()
    assert lease is not None
    fs = registration.register_factor_set(
        factory=factory, store=store, lease=lease, run_dir=trained_pair[0].run_dir, report=trained_pair[0].report
    )
    assert ckn_sha in collected[0].sha256  # the collector did delete the (then unreferenced) CKN...
    assert fs.ckn_artifact.sha256 == ckn_sha
    store.verify(ckn_sha)  # ...and the registration stored it again before committing
    for f in fs.factors:
        store.verify(f.artifact.sha256)


def test_kf_gc_dry_run_reports_and_deletes_nothing(
    migrated: Any, store: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import main as kf
    from service.config import get_settings, settings_env

    orphan = store.put_bytes(b"orphan")
    for k, v in settings_env(migrated.model_copy(update={"gc_grace_s": 0.0})).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        time.sleep(1.1)
        assert kf(["gc", "--dry-run"]) == 0
        assert "would delete 1 artifact(s), 6 bytes" in capsys.readouterr().out
        assert store.exists(orphan.sha256)
        assert kf(["gc"]) == 0
        assert "deleted 1 artifact(s), 6 bytes" in capsys.readouterr().out
        assert not store.exists(orphan.sha256)
    finally:
        get_settings.cache_clear()
