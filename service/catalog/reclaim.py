"""Retire a catalog row and reclaim what it alone referenced, in the order that keeps both consistent.

The rows go in one committed transaction (:mod:`service.catalog.retire`), then the collector deletes exactly
those of their artifacts that nothing references any more (:mod:`service.catalog.gc`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy.orm import Session, sessionmaker

from service.catalog import queries as catalog
from service.catalog import retire
from service.catalog.artifacts import ArtifactStore
from service.catalog.db import session_scope
from service.catalog.gc import GcReport, collect

__all__ = ["retire_dataset", "retire_factor_set", "retire_teacher"]


def retire_factor_set(
    *, factory: sessionmaker[Session], store: ArtifactStore, ref: str, protect: Collection[str] = ()
) -> tuple[uuid.UUID, str, GcReport]:
    """Delete one factor set version; returns its id, ``name:version`` and what was freed."""
    with session_scope(factory) as session:
        fs, freed = retire.delete_factor_set(session=session, ref=ref)
        fs_id, label = fs.id, f"{fs.name}:{fs.version}"
    return fs_id, label, collect(factory=factory, store=store, candidates=freed, protect=protect)


def retire_teacher(
    *, factory: sessionmaker[Session], store: ArtifactStore, teacher_id: uuid.UUID
) -> tuple[str, GcReport]:
    with session_scope(factory) as session:
        name = retire_name(session, "teacher", teacher_id)
        freed = retire.delete_teacher(session=session, teacher_id=teacher_id)
    return name, collect(factory=factory, store=store, candidates=freed)


def retire_dataset(
    *, factory: sessionmaker[Session], store: ArtifactStore, dataset_id: uuid.UUID
) -> tuple[str, GcReport]:
    with session_scope(factory) as session:
        name = retire_name(session, "dataset", dataset_id)
        freed = retire.delete_dataset(session=session, dataset_id=dataset_id)
    return name, collect(factory=factory, store=store, candidates=freed)


def retire_name(session: Session, kind: str, key: uuid.UUID) -> str:
    if kind == "teacher":
        return catalog.get_teacher(session=session, teacher_id=key).name
    return catalog.get_dataset(session=session, dataset_id=key).name
