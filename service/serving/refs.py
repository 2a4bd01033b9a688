"""Factor sets as serving addresses them: by id, by name (its latest version), as ``name:version`` or as
``name@alias`` (an alias, movable).

:func:`load_factor_set_info` reads what serving needs about one factor set in one go (tasks, classes, input,
manifest); factor sets never change once registered, so ids and ``name:version`` resolve to the same answer
forever (:func:`is_immutable_ref`), while a bare name follows new versions and an alias follows its moves.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from kf_core import FactorParts, check_task_names, load_parts
from kf_core.errors import ModelFileError, UnknownTaskError
from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore

__all__ = ["FactorSetInfo", "TaskInfo", "is_immutable_ref", "load_factor_set_info", "materialize_parts"]

_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class TaskInfo:
    name: str
    output: str
    classes: list[int]
    class_names: list[str]


@dataclass(frozen=True)
class FactorSetInfo:
    """What serving needs to know about a factor set, read once from the catalog (factor sets never change)."""

    id: uuid.UUID
    name: str
    version: int
    versions: list[int]  # every version under this name (for v2 model metadata)
    tasks: list[TaskInfo]  # in the factor set's order
    input_spec: dict[str, Any]
    manifest_sha256: str
    manifest_size: int

    @functools.cached_property  # read on every request; the tasks never change
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskInfo:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownTaskError("task", name, self.task_names)

    def canonical_tasks(self, tasks: Sequence[str] | None) -> tuple[str, ...]:
        """``tasks`` validated (:func:`kf_core.check_task_names`) and put in the factor set's order; ``None`` means
        all of them."""
        if tasks is None:
            return tuple(self.task_names)
        chosen = set(check_task_names(tasks, self.task_names))
        return tuple(n for n in self.task_names if n in chosen)


def load_factor_set_info(*, session: Session, ref: str) -> FactorSetInfo:
    """The factor set ``ref`` names (see :func:`service.catalog.queries.resolve_factor_set`), with its versions."""
    fs = catalog.resolve_factor_set(session=session, ref=ref)
    return FactorSetInfo(
        id=fs.id,
        name=fs.name,
        version=fs.version,
        versions=catalog.factor_set_versions(session=session, name=fs.name),
        tasks=[TaskInfo(f.task, f.output, list(f.classes), [str(c) for c in f.class_names]) for f in fs.factors],
        input_spec=dict(fs.input_spec),
        manifest_sha256=fs.manifest_artifact.sha256,
        manifest_size=fs.manifest_artifact.size_bytes,
    )


def materialize_parts(store: ArtifactStore, fs: FactorSetInfo, directory: Path) -> FactorParts:
    """The factor set's parts as :func:`kf_core.parts.load_parts` reads them: already in ``directory``, or copied
    there out of the artifact store (each verified on the way) when missing or damaged on disk. Part file names
    come from the stored manifest and must be plain names, never paths."""
    try:
        return load_parts(directory)
    except ModelFileError:
        pass  # not copied yet, or damaged on disk: copy (again) from the verified store
    manifest_bytes = store.read_bytes(fs.manifest_sha256, size=fs.manifest_size)
    manifest = json.loads(manifest_bytes)
    entries = [manifest["ckn"], *manifest["tasks"].values()]
    for e in entries:
        if not _SAFE_FILE.match(str(e["file"])):
            raise ModelFileError(f"factor set {fs.name}:{fs.version} names a part file {e['file']!r}; refused")
    directory.mkdir(parents=True, exist_ok=True)
    for e in entries:
        store.copy_to(str(e["sha256"]), directory / str(e["file"]))
    (directory / "manifest.json").write_bytes(manifest_bytes)
    return load_parts(directory)


def is_immutable_ref(ref: str) -> bool:
    """True for an id or ``name:version``, which always name the same factor set; False for a bare name or
    ``name@alias`` (both can move: a new version, a moved alias)."""
    if "@" in ref:
        return False
    if ":" in ref:
        return True
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True
