"""Reclaiming storage: delete the artifacts that nothing in the catalog references.

    report = collect(factory=f, store=store, dry_run=True)     # what would go: count, bytes, hashes
    report = collect(factory=f, store=store)                   # delete it

**References.** An artifact row is referenced while a teacher, a dataset, a factor set (CKN, manifest, report), a
factor, a stored assembly or a job's checkpoint points at it. Running jobs reference their teacher, dataset and
last checkpoint through their row, so nothing a running job reads is ever unreferenced.

**Unreferenced rows** are deleted one by one, each in its own transaction: the row is deleted (which locks it),
re-checked against every reference, then its file is deleted, then the transaction commits. A registration that
records the same content concurrently either finds the row before the delete (its foreign key then holds the row:
the delete fails and the artifact is skipped) or after it (then it records a new row and, in the same transaction,
puts the file back if it is gone: :func:`service.jobs.register.register_factor_set` checks every file it
registers after recording it). Either way no committed row ever points at a missing file.

**Files without a row** (an upload or a job's output stored but not registered yet) are protected by time: they
are deleted only once older than ``grace_s`` (``KF_GC_GRACE_S``, default 1 hour) *and* older than the start of
the oldest running job (its lease: what it writes before registering is never collected while it runs). Storing
content that already exists refreshes the file's time (a re-upload on object storage, a touch on disk), so a
registration that reuses old bytes protects them too.

``protect`` names hashes kept whatever the catalog says (the serving process passes what its caches hold).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, delete, exists, func, select, union
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.catalog.artifacts import ArtifactStore
from service.catalog.db import session_scope
from service.catalog.models import Artifact, Assembly, Dataset, Factor, FactorSet, Job, JobStatus, Teacher

__all__ = ["GcReport", "collect", "referenced_ids"]

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    """What a collection deleted (or, in a dry run, would delete)."""

    dry_run: bool
    count: int = 0
    bytes: int = 0
    sha256: list[str] = field(default_factory=list)
    skipped: int = 0  # unreferenced when listed, referenced again (or protected) when deleted


def _references() -> list[Select[Any]]:
    return [
        select(Teacher.artifact_id),
        select(Dataset.artifact_id).where(Dataset.artifact_id.is_not(None)),
        select(Job.checkpoint_artifact_id).where(Job.checkpoint_artifact_id.is_not(None)),
        select(FactorSet.ckn_artifact_id),
        select(FactorSet.manifest_artifact_id),
        select(FactorSet.report_artifact_id),
        select(Factor.artifact_id),
        select(Assembly.graph_artifact_id),
    ]


def referenced_ids(session: Session) -> set[uuid.UUID]:
    found: set[uuid.UUID] = {i for i in session.scalars(union(*_references())) if i is not None}
    return found


def _is_referenced(session: Session, artifact_id: uuid.UUID) -> bool:
    checks = [
        exists().where(Teacher.artifact_id == artifact_id),
        exists().where(Dataset.artifact_id == artifact_id),
        exists().where(Job.checkpoint_artifact_id == artifact_id),
        exists().where(FactorSet.ckn_artifact_id == artifact_id),
        exists().where(FactorSet.manifest_artifact_id == artifact_id),
        exists().where(FactorSet.report_artifact_id == artifact_id),
        exists().where(Factor.artifact_id == artifact_id),
        exists().where(Assembly.graph_artifact_id == artifact_id),
    ]
    return any(session.scalar(select(c)) for c in checks)


def collect(
    *,
    factory: sessionmaker[Session],
    store: ArtifactStore,
    dry_run: bool = False,
    grace_s: float = 3600.0,
    margin_s: float = 5.0,
    candidates: Collection[uuid.UUID] | None = None,
    protect: Collection[str] = (),
) -> GcReport:
    """Delete unreferenced artifacts (only among ``candidates`` if given, and then no orphan files)."""
    report = GcReport(dry_run=dry_run)
    with factory() as session:
        query = select(Artifact.id, Artifact.sha256, Artifact.size_bytes)
        if candidates is not None:
            query = query.where(Artifact.id.in_(list(candidates)))
        rows = session.execute(query).all()
        referenced = referenced_ids(session)
    for artifact_id, sha, size in rows:
        if artifact_id in referenced:
            continue
        if sha in protect:
            report.skipped += 1
            continue
        if dry_run or _delete_row_and_file(factory, store, artifact_id, sha):
            report.count, report.bytes = report.count + 1, report.bytes + size
            report.sha256.append(sha)
        else:
            report.skipped += 1
    if candidates is None:
        _collect_orphan_files(factory, store, report, cutoff=_cutoff(factory, grace_s, margin_s), protect=protect)
    log.info("gc%s: %d artifact(s), %d bytes", " (dry run)" if dry_run else "", report.count, report.bytes)
    return report


def _delete_row_and_file(
    factory: sessionmaker[Session], store: ArtifactStore, artifact_id: uuid.UUID, sha: str
) -> bool:
    try:
        with session_scope(factory) as session:
            # The DELETE comes first: it locks the row (PostgreSQL) or the database (SQLite) until the commit,
            # so the re-check below and the file deletion see no registration slip in between.
            deleted = session.execute(delete(Artifact).where(Artifact.id == artifact_id)).rowcount  # type: ignore[attr-defined]
            if not deleted or _is_referenced(session, artifact_id):
                session.rollback()
                return False
            session.flush()
            store.delete(sha)
    except (IntegrityError, OperationalError):  # a registration referenced it meanwhile: it stays
        log.info("gc: artifact %s is referenced again; kept", sha)
        return False
    return True


def _cutoff(factory: sessionmaker[Session], grace_s: float, margin_s: float) -> float:
    """Files modified at or after this POSIX time are kept: within the grace period, or written since the oldest
    running job started (less ``margin_s`` for clock skew and the object store's one-second timestamps)."""
    with factory() as session:
        oldest_run = session.scalar(select(func.min(Job.started_at)).where(Job.status == JobStatus.running.value))
    cutoff = time.time() - grace_s
    if oldest_run is not None:
        cutoff = min(cutoff, oldest_run.astimezone(dt.UTC).timestamp() - margin_s)
    return cutoff


def _collect_orphan_files(
    factory: sessionmaker[Session], store: ArtifactStore, report: GcReport, *, cutoff: float, protect: Collection[str]
) -> None:
    with factory() as session:
        known = set(session.scalars(select(Artifact.sha256)))
    for sha, size, mtime in store.list_stored():
        if sha in known or sha in protect or mtime >= cutoff:
            continue
        if not report.dry_run:
            again = store.stored_mtime(sha)  # re-read: an upload of the same bytes may have just refreshed it
            if again is None or again >= cutoff or _row_exists(factory, sha):
                report.skipped += 1
                continue
            store.delete(sha)
        report.count, report.bytes = report.count + 1, report.bytes + size
        report.sha256.append(sha)


def _row_exists(factory: sessionmaker[Session], sha: str) -> bool:
    with factory() as session:
        return session.scalar(select(Artifact.id).where(Artifact.sha256 == sha)) is not None
