"""Register a finished run's factor set: store every part, verify it, then one transaction for the catalog.

Order matters. First every file (parts, manifest, report) is copied into the artifact store and re-read from
there; each part's hash must equal the hash kf_core's exporter wrote into the manifest. Only then one
transaction, fenced by the run's lease, marks the job succeeded, inserts the factor set, its factors and
their artifact rows, and deletes the job's checkpoint row (a succeeded job is never resumed; its file goes after
the commit). A cancel, a lost lease or a crash before that commit leaves nothing registered (at most
unreferenced content-addressed files); ``factor_set.job_id`` being unique makes a second registration
impossible even for a zombie run. The garbage collector (:mod:`service.catalog.gc`) may run at any time: a
registration re-checks, inside its transaction, that every file it registers is still in the store.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore, StoredFile
from service.catalog.checkpoints import drop_checkpoint
from service.catalog.db import session_scope
from service.catalog.leases import Lease, finish_run, lock_job
from service.catalog.models import Artifact, FactorSet, JobStatus
from service.catalog.versions import FactorEntry, insert_factor_set
from service.errors import ArtifactCorruptError, LeaseLostError

__all__ = ["delete_quietly", "register_factor_set"]

log = logging.getLogger(__name__)

ONNX = "application/onnx"
JSON = "application/json"


def register_factor_set(
    *, factory: sessionmaker[Session], store: ArtifactStore, lease: Lease, run_dir: Path, report: dict[str, Any]
) -> FactorSet:
    """Store and verify ``run_dir/parts``, then register the factor set and finish the job in one transaction."""
    parts = run_dir / "parts"
    manifest = json.loads((parts / "manifest.json").read_text())
    ckn = _store_verified(store, parts / manifest["ckn"]["file"], manifest["ckn"]["sha256"])
    tasks = {
        name: _store_verified(store, parts / entry["file"], entry["sha256"])
        for name, entry in manifest["tasks"].items()
    }
    manifest_file = _store_verified(store, parts / "manifest.json", None)
    report_file = _store_verified(store, run_dir / "report.json", None)

    sources = {ckn.sha256: parts / manifest["ckn"]["file"], manifest_file.sha256: parts / "manifest.json"}
    sources |= {tasks[name].sha256: parts / entry["file"] for name, entry in manifest["tasks"].items()}
    sources[report_file.sha256] = run_dir / "report.json"

    for attempt in range(3):  # a concurrent registration under the same name, or the collector, makes this loop
        try:
            with session_scope(factory) as session:
                factor_set = _insert(session, lease, manifest, report, ckn, tasks, manifest_file, report_file)
                checkpoint = drop_checkpoint(session=session, job_id=lease.job_id)
                # The collector may have deleted an unreferenced artifact with the same content between our upload
                # and the rows above; now that this transaction holds the rows, put back any file that went.
                for sha, path in sources.items():
                    if not store.exists(sha):
                        log.info("artifact %s was collected during registration; storing it again", sha)
                        _store_verified(store, path, sha)
            if checkpoint is not None:  # its row went with the commit; the file is unreferenced now
                delete_quietly(store, checkpoint, what=f"job {lease.job_id}'s checkpoint")
            return factor_set
        except IntegrityError as e:
            message = str(e.orig).lower()
            if ("version" not in message and "foreign key" not in message) or attempt == 2:
                raise
            log.info("registration raced with another registration or the collector; retrying")
    raise AssertionError("unreachable")


def delete_quietly(store: ArtifactStore, sha256: str, *, what: str) -> None:
    """Delete an unreferenced file; a failure leaves it to the collector (``kf gc``), which finds files without a
    row once they are older than its grace period."""
    try:
        store.delete(sha256)
    except Exception:
        log.warning("could not delete %s (%s); kf gc will", what, sha256, exc_info=True)


def _store_verified(store: ArtifactStore, path: Path, expected: str | None) -> StoredFile:
    stored = store.put_file(path)
    if expected is not None and stored.sha256 != expected:
        raise ArtifactCorruptError(
            f"{path.name} hashes to {stored.sha256} but the exporter recorded {expected}; the file changed on disk "
            "between export and registration"
        )
    store.verify(stored.sha256, size=stored.size)  # what is in the store, not what we meant to write
    return stored


def _insert(
    session: Session,
    lease: Lease,
    manifest: dict[str, Any],
    report: dict[str, Any],
    ckn: StoredFile,
    tasks: dict[str, StoredFile],
    manifest_file: StoredFile,
    report_file: StoredFile,
) -> FactorSet:
    job = lock_job(session=session, job_id=lease.job_id)
    if job is None or job.lease != lease.token or job.status != JobStatus.running:
        raise LeaseLostError(f"job {lease.job_id}: lost the job before registering its factor set")
    if job.cancel_requested_at is not None:
        raise LeaseLostError(f"job {lease.job_id} was cancelled before its factor set was registered")
    finish_run(session=session, lease=lease, status=JobStatus.succeeded, stage="done", progress=1.0)

    def record(stored: StoredFile, media_type: str) -> Artifact:
        return catalog.record_artifact(session=session, stored=stored, media_type=media_type)

    task_report = report.get("tasks", {})
    return insert_factor_set(
        session=session,
        job=job,
        config=job.recipe,
        metrics={k: v for k, v in report.items() if k != "tasks"} | {"tasks": task_report},
        input_spec=manifest["input"],
        ckn=record(ckn, ONNX),
        manifest=record(manifest_file, JSON),
        report=record(report_file, JSON),
        factors=[
            FactorEntry(
                task=name,
                output=entry["output"],
                classes=list(entry["classes"]),
                class_names=list(entry["class_names"]),
                artifact=record(tasks[name], ONNX),
                metrics=task_report.get(name, {}),
            )
            for name, entry in manifest["tasks"].items()
        ],
    )
