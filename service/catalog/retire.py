"""Retiring catalog rows: a factor set version, a teacher, a dataset. Refused while something depends on them.

    ids = delete_factor_set(session=s, ref="dsprites:1")   # refused while an alias or an extension job uses it
    ids = delete_teacher(session=s, teacher_id=...)        # refused while factor sets or active jobs use it

Each function deletes rows only and returns the ids of the artifacts those rows referenced: the caller commits,
then hands them to :func:`service.catalog.gc.collect`, which deletes those that nothing references any more
(an artifact shared with another version, such as a reused CKN, stays). Finished jobs of a deleted teacher or
dataset are deleted with it (their history goes; a job that registered a factor set keeps it alive).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.models import EXTEND_KEY, Assembly, FactorSet, FactorSetAlias, Job, JobStatus
from service.errors import ConflictError, InvalidInputError

__all__ = ["delete_dataset", "delete_factor_set", "delete_teacher"]

_ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


def delete_factor_set(*, session: Session, ref: str) -> tuple[FactorSet, set[uuid.UUID]]:
    """Delete one version (``ref``: its id or ``name:version``) with its factors and stored assemblies."""
    if "@" in ref or (":" not in ref and not _is_uuid(ref)):
        raise InvalidInputError(
            f"{ref!r} can move (a bare name or an alias); name the version to delete as name:version or by its id"
        )
    fs = catalog.resolve_factor_set(session=session, ref=ref)
    aliases = session.scalars(select(FactorSetAlias.alias).where(FactorSetAlias.factor_set_id == fs.id)).all()
    if aliases:
        names = ", ".join(f"{fs.name}@{a}" for a in aliases)
        raise ConflictError(
            f"factor set {fs.name}:{fs.version} is the target of alias(es) {names}; move or delete them first"
        )
    readers = _extension_jobs(session, fs.id)
    if readers:
        raise ConflictError(
            f"factor set {fs.name}:{fs.version} is being extended by queued or running job(s) {_first(readers)}, "
            "which read its CKN and parts; wait for them to finish or cancel them first"
        )
    freed = {fs.ckn_artifact_id, fs.manifest_artifact_id, fs.report_artifact_id}
    freed |= {f.artifact_id for f in fs.factors}
    for assembly in session.scalars(select(Assembly).where(Assembly.factor_set_id == fs.id)):
        freed.add(assembly.graph_artifact_id)
        session.delete(assembly)
    session.delete(fs)
    session.flush()
    return fs, freed


def delete_teacher(*, session: Session, teacher_id: uuid.UUID) -> set[uuid.UUID]:
    teacher = catalog.get_teacher(session=session, teacher_id=teacher_id)
    _refuse_if_used(session, "teacher", teacher.name, FactorSet.teacher_id == teacher.id, Job.teacher_id == teacher.id)
    freed = {teacher.artifact_id} | _delete_finished_jobs(session, Job.teacher_id == teacher.id)
    session.delete(teacher)
    session.flush()
    return freed


def delete_dataset(*, session: Session, dataset_id: uuid.UUID) -> set[uuid.UUID]:
    dataset = catalog.get_dataset(session=session, dataset_id=dataset_id)
    _refuse_if_used(session, "dataset", dataset.name, FactorSet.dataset_id == dataset.id, Job.dataset_id == dataset.id)
    freed = _delete_finished_jobs(session, Job.dataset_id == dataset.id)
    if dataset.artifact_id is not None:
        freed.add(dataset.artifact_id)
    session.delete(dataset)
    session.flush()
    return freed


def _refuse_if_used(session: Session, kind: str, name: str, fs_filter: object, job_filter: object) -> None:
    versions = session.execute(
        select(FactorSet.name, FactorSet.version).where(fs_filter).order_by(FactorSet.name, FactorSet.version)  # type: ignore[arg-type]
    ).all()
    if versions:
        listed = _first(f"{n}:{v}" for n, v in versions)
        raise ConflictError(
            f"{kind} {name!r} is used by factor set(s) {listed}; delete those versions first "
            "(DELETE /v1/factor-sets/{name:version})"
        )
    active = session.scalars(select(Job.id).where(job_filter, Job.status.in_(_ACTIVE))).all()  # type: ignore[arg-type]
    if active:
        raise ConflictError(
            f"{kind} {name!r} is used by queued or running job(s) {_first(str(j) for j in active)}; "
            "wait for them to finish or cancel them first"
        )


def _extension_jobs(session: Session, factor_set_id: uuid.UUID) -> list[str]:
    """Ids of the queued or running extension jobs whose base is ``factor_set_id`` (they read its files)."""
    active = session.execute(select(Job.id, Job.recipe).where(Job.status.in_(_ACTIVE)).order_by(Job.created_at))
    base = str(factor_set_id)
    return [str(j) for j, recipe in active if str(((recipe or {}).get(EXTEND_KEY) or {}).get("factor_set_id")) == base]


def _delete_finished_jobs(session: Session, job_filter: object) -> set[uuid.UUID]:
    freed: set[uuid.UUID] = set()
    for job in session.scalars(select(Job).where(job_filter)):  # type: ignore[arg-type]
        if job.checkpoint_artifact_id is not None:
            freed.add(job.checkpoint_artifact_id)
        session.delete(job)
    session.flush()
    return freed


def _is_uuid(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


def _first(items: Iterable[str], limit: int = 10) -> str:
    shown = list(items)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more
