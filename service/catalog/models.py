"""The catalog's tables (SQLAlchemy 2 typed ORM). Alembic migrations in ``migrations/`` create them.

    artifact ──< teacher, dataset, factor_set (ckn, manifest, report), factor (part), assembly (graph),
                 job (last checkpoint)
    teacher ──< job ──1 factor_set ──< factor            dataset ──< job
                        factor_set ──< assembly
                        factor_set ──< factor_set_alias (name@alias -> one version; movable)

A factor set is registered in one transaction with its factors, and ``factor_set.job_id`` is unique: one job
can never register two factor sets, whatever happens to its workers. Datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.catalog.db import utcnow

__all__ = [
    "ApiKey",
    "Artifact",
    "Assembly",
    "Base",
    "Dataset",
    "Factor",
    "FactorSet",
    "FactorSetAlias",
    "Job",
    "JobStatus",
    "Teacher",
    "UTCDateTime",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive; they are UTC by construction)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


class Artifact(Base):
    """A content-addressed file in the artifact store; ``path`` is relative to ``KF_ARTIFACT_DIR``."""

    __tablename__ = "artifact"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Teacher(Base):
    """An uploaded, validated teacher model and how its outputs map to logical output names."""

    __tablename__ = "teacher"
    __table_args__ = (CheckConstraint("format IN ('onnx', 'torchscript')", name="format"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    format: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    input_shape: Mapped[list[Any]] = mapped_column()  # one sample: (D,), (C, H, W), ...; -1 where a dim is free
    outputs: Mapped[dict[str, Any]] = mapped_column()  # logical output name -> graph output name / index
    output_sizes: Mapped[dict[str, Any]] = mapped_column()  # logical output name -> number of classes
    features: Mapped[list[Any]] = mapped_column()  # graph outputs used as stage features (InfoMax)
    feature_dims: Mapped[list[Any]] = mapped_column()
    class_names: Mapped[dict[str, Any]] = mapped_column()
    tasks: Mapped[list[Any]] = mapped_column()  # default tasks of jobs on this teacher (kf_core TaskSpec JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    artifact: Mapped[Artifact] = relationship(lazy="joined")


class Dataset(Base):
    """A data source jobs can train on: a built-in generator (dsprites, digits) or an uploaded npz file."""

    __tablename__ = "dataset"
    __table_args__ = (CheckConstraint("source IN ('dsprites', 'digits', 'npz')", name="source"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    artifact_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    input_shape: Mapped[list[Any]] = mapped_column()  # one sample: (D,), (C, H, W), ...
    classes: Mapped[dict[str, Any]] = mapped_column()  # label column -> class names
    num_samples: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    artifact: Mapped[Artifact | None] = relationship(lazy="joined")


EXTEND_KEY = "extend"  # the recipe entry of an extension job: it names the factor set whose CKN the job reads


class Job(Base):
    """A factorization job. The row is the source of truth for status, progress, cancellation and leases."""

    __tablename__ = "job"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.queued.value)
    stage: Mapped[str] = mapped_column(String(32), default="queued")  # what the job is doing right now
    teacher_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teacher.id", ondelete="RESTRICT"), index=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id", ondelete="RESTRICT"), index=True)
    recipe: Mapped[dict[str, Any]] = mapped_column()  # the resolved kf_core Recipe JSON, tasks included
    factor_set_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(64))
    rq_job_id: Mapped[str | None] = mapped_column(String(64))  # the RQ job that should run it next (RQ mode)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1 over all training steps
    epoch: Mapped[int] = mapped_column(Integer, default=0)  # finished epochs
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)  # global training step
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)  # running means of the current epoch
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # runs started so far
    max_attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)  # last failure, kept after a retry succeeds
    lease: Mapped[str | None] = mapped_column(String(32))  # token of the run that owns the job while running
    worker: Mapped[str | None] = mapped_column(String(255))  # host:pid of that run
    checkpoint_artifact_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("artifact.id", ondelete="SET NULL"), index=True
    )
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)  # global step of the stored checkpoint
    resumed_from_step: Mapped[int | None] = mapped_column(Integer)  # set when a run restarted from a checkpoint
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()  # database clock (see service.catalog.db.db_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column()

    teacher: Mapped[Teacher] = relationship(lazy="joined")
    dataset: Mapped[Dataset] = relationship(lazy="joined")
    factor_set: Mapped[FactorSet | None] = relationship(back_populates="job", lazy="selectin")

    @property
    def factor_set_id(self) -> uuid.UUID | None:
        return self.factor_set.id if self.factor_set is not None else None


class FactorSet(Base):
    """The result of a successful job: its parts, metrics and lineage (teacher, dataset, job, config)."""

    __tablename__ = "factor_set"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per name
    teacher_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teacher.id", ondelete="RESTRICT"), index=True)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dataset.id", ondelete="RESTRICT"), index=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="RESTRICT"), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column()  # the recipe that produced it
    metrics: Mapped[dict[str, Any]] = mapped_column()  # kf_core's factorization report
    input_spec: Mapped[dict[str, Any]] = mapped_column()  # {"name": "x", "shape": [None, *sample shape], ...}
    ckn_artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    manifest_artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    report_artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    job: Mapped[Job] = relationship(back_populates="factor_set", lazy="joined")
    teacher: Mapped[Teacher] = relationship(lazy="joined")
    dataset: Mapped[Dataset] = relationship(lazy="joined")
    factors: Mapped[list[Factor]] = relationship(
        back_populates="factor_set", order_by="Factor.position", lazy="selectin", cascade="all, delete-orphan"
    )
    ckn_artifact: Mapped[Artifact] = relationship(foreign_keys=[ckn_artifact_id], lazy="joined")
    manifest_artifact: Mapped[Artifact] = relationship(foreign_keys=[manifest_artifact_id], lazy="joined")
    report_artifact: Mapped[Artifact] = relationship(foreign_keys=[report_artifact_id], lazy="joined")
    aliases: Mapped[list[FactorSetAlias]] = relationship(
        back_populates="factor_set", order_by="FactorSetAlias.alias", lazy="selectin"
    )


class FactorSetAlias(Base):
    """A movable name for one version: ``name@alias`` (``prod``, ``staging``) resolves to ``factor_set_id``."""

    __tablename__ = "factor_set_alias"
    __table_args__ = (UniqueConstraint("name", "alias"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(128))  # the factor set's name (every version shares it)
    alias: Mapped[str] = mapped_column(String(64))
    # RESTRICT: a version an alias points at cannot be deleted (move or delete the alias first).
    factor_set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("factor_set.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    factor_set: Mapped[FactorSet] = relationship(back_populates="aliases", lazy="joined")


class Factor(Base):
    """One task of a factor set: its ONNX part (TSN_i + head_i), classes and accuracy."""

    __tablename__ = "factor"
    __table_args__ = (UniqueConstraint("factor_set_id", "task"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    factor_set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("factor_set.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)  # order of the task in the factor set
    output: Mapped[str] = mapped_column(String(128))  # the teacher output it reads
    classes: Mapped[list[Any]] = mapped_column()  # teacher class indices it covers
    class_names: Mapped[list[Any]] = mapped_column()
    artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column()

    factor_set: Mapped[FactorSet] = relationship(back_populates="factors")
    artifact: Mapped[Artifact] = relationship(lazy="joined")


class Assembly(Base):
    """A composed graph for a task subset of a factor set, cached as an artifact."""

    __tablename__ = "assembly"
    __table_args__ = (UniqueConstraint("factor_set_id", "tasks_key", "combined"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    factor_set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("factor_set.id", ondelete="CASCADE"), index=True)
    tasks: Mapped[list[Any]] = mapped_column()  # in the order the graph outputs them
    tasks_key: Mapped[str] = mapped_column(String(1024))  # sorted task names joined by ","
    combined: Mapped[bool] = mapped_column(default=False)
    graph_artifact_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("artifact.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    graph_artifact: Mapped[Artifact] = relationship(lazy="joined")


class ApiKey(Base):
    """An API key: only its sha256 is stored; ``prefix`` (also part of the key) finds the row and names it in logs."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint("scope IN ('predict', 'admin')", name="scope"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
