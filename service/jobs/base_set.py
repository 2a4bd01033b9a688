"""The base factor set of an extension run: its manifest and parts copied out of the artifact store.

An extension job (:mod:`service.jobs.extend` submits it) trains new task parts against its base set's frozen
CKN; the run (:mod:`service.jobs.run`) reads that CKN from here.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore

__all__ = ["fetch_base_parts"]


def fetch_base_parts(*, session: Session, store: ArtifactStore, factor_set_id: Any, directory: Path) -> dict[str, Any]:
    """Copy the base factor set's manifest and parts into ``directory`` (each verified against its sha256);
    return its per-task metrics, which the new version keeps for its old tasks."""
    fs = catalog.get_factor_set(session=session, factor_set_id=uuid.UUID(str(factor_set_id)))
    raw = store.read_bytes(fs.manifest_artifact.sha256, size=fs.manifest_artifact.size_bytes)
    manifest = json.loads(raw)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in [manifest["ckn"], *manifest["tasks"].values()]:
        name = Path(str(entry["file"])).name  # never a path from the manifest
        store.copy_to(str(entry["sha256"]), directory / name)
    (directory / "manifest.json").write_bytes(raw)
    tasks: dict[str, Any] = dict(fs.metrics.get("tasks") or {})
    return {"tasks": tasks, "name": fs.name, "version": fs.version}
