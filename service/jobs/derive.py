"""Factor-set versions made without training: removing tasks, and importing a run made elsewhere.

Both register the next version of a name the way a job does (parts verified, one transaction), with a finished
job row as their lineage (its ``stage`` says ``removed-tasks`` or ``imported``; nothing ever runs it):

- **remove tasks**: a new manifest without those tasks; the CKN, the kept task parts and the report are the base
  version's very artifact rows (same sha256), so nothing is copied;
- **import**: a ``kf factorize`` run directory (``parts/`` and ``report.json``) packed as a tar archive, checked by
  :func:`kf_core.verify_factor_set` (hashes, parts load, the assembly composes, the run's own drift check), then
  stored by content like a job's output.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kf_core import verify_factor_set
from kf_core.errors import KfError
from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactStore
from service.catalog.datasets import builtin_classes
from service.catalog.models import Artifact, Dataset, FactorSet, Job, Teacher
from service.catalog.versions import FactorEntry, create_finished_job, insert_factor_set
from service.errors import ConflictError, InvalidInputError
from service.jobs.submit import _referenced
from service.schemas import FactorSetImport

__all__ = ["import_run", "remove_tasks"]

ONNX = "application/onnx"
JSON = "application/json"
_MAX_MEMBERS = 512


def remove_tasks(*, session: Session, store: ArtifactStore, ref: str, tasks: list[str]) -> FactorSet:
    """The next version of ``ref``'s name without ``tasks``; every kept part is reused by reference."""
    base = catalog.resolve_factor_set(session=session, ref=ref)
    have = [f.task for f in base.factors]
    unknown = sorted(set(tasks) - set(have))
    if unknown:
        raise InvalidInputError(f"factor set {base.name}:{base.version} has no task(s) {unknown}; its tasks: {have}")
    keep = [f for f in base.factors if f.task not in tasks]
    if not keep:
        raise InvalidInputError("removing every task would leave an empty factor set; keep at least one task")
    manifest = json.loads(store.read_bytes(base.manifest_artifact.sha256, size=base.manifest_artifact.size_bytes))
    manifest["tasks"] = {f.task: manifest["tasks"][f.task] for f in keep}
    stored = store.put_bytes((json.dumps(manifest, indent=2) + "\n").encode())
    manifest_row = catalog.record_artifact(session=session, stored=stored, media_type=JSON)
    metrics = dict(base.metrics)
    metrics["tasks"] = {f.task: f.metrics for f in keep}
    metrics["derived_from"] = {"id": str(base.id), "name": base.name, "version": base.version, "removed": tasks}
    job = create_finished_job(
        session=session,
        teacher_id=base.teacher_id,
        dataset_id=base.dataset_id,
        recipe=base.config,
        factor_set_name=base.name,
        stage="removed-tasks",
    )
    row = _new_version(
        session,
        job=job,
        config=base.config,
        metrics=metrics,
        input_spec=base.input_spec,
        ckn=base.ckn_artifact,
        manifest=manifest_row,
        report=base.report_artifact,
        factors=[FactorEntry(f.task, f.output, f.classes, f.class_names, f.artifact, f.metrics) for f in keep],
    )
    session.commit()
    return row


def import_run(
    *, session: Session, store: ArtifactStore, archive: Path, spec: FactorSetImport, work_dir: Path
) -> FactorSet:
    """Register the run packed in ``archive`` (``parts/...`` and ``report.json``) as the next version of
    ``spec.name``, after verifying it like a job's output."""
    teacher_id = spec.teacher_id
    teacher = _referenced(lambda: catalog.get_teacher(session=session, teacher_id=teacher_id))
    dataset = _dataset(session, spec)
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kf-import-", dir=work_dir) as tmp:
        run = Path(tmp)
        _unpack(archive, run)
        try:
            report = json.loads((run / "report.json").read_text())
            manifest = json.loads((run / "parts" / "manifest.json").read_text())
            recipe = json.loads((run / "recipe.json").read_text()) if (run / "recipe.json").exists() else {}
        except (OSError, ValueError):  # no detail: it would name the server's scratch path
            raise InvalidInputError(
                "the archive lacks parts/manifest.json or report.json, or one is not JSON; pack a `kf factorize` run"
            ) from None
        try:
            check = verify_factor_set(run / "parts", report=report)
        except KfError as e:  # kf_core names files by path: keep the archive's names, never the server's
            detail = str(e).replace(f"{run.resolve()}/", "").replace(f"{run}/", "")
            raise InvalidInputError(f"the run does not verify: {detail}") from None
        _check_teacher(teacher, manifest)
        parts = run / "parts"
        ckn = _put(store, parts / Path(manifest["ckn"]["file"]).name, manifest["ckn"]["sha256"])
        task_files = {n: _put(store, parts / Path(e["file"]).name, e["sha256"]) for n, e in manifest["tasks"].items()}
        manifest_file = store.put_file(parts / "manifest.json")
        report_file = store.put_file(run / "report.json")

    def record(stored: Any, media: str) -> Artifact:
        return catalog.record_artifact(session=session, stored=stored, media_type=media)

    task_report = report.get("tasks") or {}
    metrics = {k: v for k, v in report.items() if k != "tasks"} | {"tasks": task_report, "imported": check}
    job = create_finished_job(
        session=session,
        teacher_id=teacher.id,
        dataset_id=dataset.id,
        recipe=recipe,
        factor_set_name=spec.name,
        stage="imported",
    )
    row = _new_version(
        session,
        job=job,
        config=recipe,
        metrics=metrics,
        input_spec=manifest["input"],
        ckn=record(ckn, ONNX),
        manifest=record(manifest_file, JSON),
        report=record(report_file, JSON),
        factors=[
            FactorEntry(
                task=n,
                output=e["output"],
                classes=list(e["classes"]),
                class_names=list(e["class_names"]),
                artifact=record(task_files[n], ONNX),
                metrics=task_report.get(n, {}),
            )
            for n, e in manifest["tasks"].items()
        ],
    )
    session.commit()
    return row


def _unpack(archive: Path, out: Path) -> None:
    """Extract regular files named ``report.json``, ``recipe.json`` or ``parts/<name>`` only; refuse the rest."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            if len(members) > _MAX_MEMBERS:
                raise InvalidInputError(f"the archive holds {len(members)} entries; a run has far fewer")
            for m in members:
                name = m.name.removeprefix("./")
                if m.isdir():
                    continue
                ok = name in ("report.json", "recipe.json") or (
                    name.startswith("parts/") and "/" not in name[6:] and name[6:] not in ("", ".", "..")
                )
                if not ok or not m.isfile():
                    continue  # curves, checkpoints, anything else of the run: not needed, never extracted
                src = tar.extractfile(m)
                assert src is not None
                dest = out / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with dest.open("wb") as f:
                    shutil.copyfileobj(src, f)
    except tarfile.TarError as e:
        raise InvalidInputError(f"the upload is not a tar archive of a run directory ({e})") from None


def _put(store: ArtifactStore, path: Path, expected: str) -> Any:
    stored = store.put_file(path)
    if stored.sha256 != expected:  # verify_factor_set checked it; this guards the copy into the store
        raise InvalidInputError(f"{path.name} hashes to {stored.sha256}, its manifest says {expected}")
    store.verify(stored.sha256, size=stored.size)
    return stored


def _check_teacher(teacher: Teacher, manifest: dict[str, Any]) -> None:
    for name, entry in manifest["tasks"].items():
        if entry["output"] not in teacher.output_sizes:
            raise InvalidInputError(
                f"task {name!r} reads teacher output {entry['output']!r}, which teacher {teacher.name!r} does not "
                f"have (its outputs: {', '.join(teacher.output_sizes)}); give the teacher the run distilled"
            )


def _dataset(session: Session, spec: FactorSetImport) -> Dataset:
    if spec.dataset_id is not None:
        dataset_id = spec.dataset_id
        return _referenced(lambda: catalog.get_dataset(session=session, dataset_id=dataset_id))
    name = spec.dataset or ""
    if name not in catalog.BUILTIN_DATASETS:
        raise InvalidInputError(
            f"unknown built-in dataset {name!r}; built-in: {', '.join(sorted(catalog.BUILTIN_DATASETS))} "
            "(an uploaded dataset goes in 'dataset_id')"
        )
    return catalog.ensure_builtin_dataset(session=session, name=name, classes=builtin_classes(name))


def _new_version(
    session: Session,
    *,
    job: Job,
    config: dict[str, Any],
    metrics: dict[str, Any],
    input_spec: dict[str, Any],
    ckn: Artifact,
    manifest: Artifact,
    report: Artifact,
    factors: list[FactorEntry],
) -> FactorSet:
    try:
        return insert_factor_set(
            session=session,
            job=job,
            config=config,
            metrics=metrics,
            input_spec=input_spec,
            ckn=ckn,
            manifest=manifest,
            report=report,
            factors=factors,
        )
    except IntegrityError:  # a concurrent registration took the version number
        raise ConflictError(f"factor set {job.factor_set_name} got a new version meanwhile; try again") from None
