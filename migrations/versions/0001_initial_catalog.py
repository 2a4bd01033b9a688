"""Initial catalog: artifacts, teachers, datasets, jobs, factor sets, factors and assemblies.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifact",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact")),
        sa.UniqueConstraint("sha256", name=op.f("uq_artifact_sha256")),
    )
    op.create_table(
        "dataset",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("artifact_id", sa.Uuid(), nullable=True),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('dsprites', 'digits', 'npz')", name=op.f("ck_dataset_source")),
        sa.ForeignKeyConstraint(
            ["artifact_id"], ["artifact.id"], name=op.f("fk_dataset_artifact_id_artifact"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset")),
        sa.UniqueConstraint("name", name=op.f("uq_dataset_name")),
    )
    op.create_index(op.f("ix_dataset_artifact_id"), "dataset", ["artifact_id"], unique=False)

    op.create_table(
        "teacher",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("artifact_id", sa.Uuid(), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("output_sizes", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("feature_dims", sa.JSON(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("format IN ('onnx', 'torchscript')", name=op.f("ck_teacher_format")),
        sa.ForeignKeyConstraint(
            ["artifact_id"], ["artifact.id"], name=op.f("fk_teacher_artifact_id_artifact"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teacher")),
        sa.UniqueConstraint("name", name=op.f("uq_teacher_name")),
    )
    op.create_index(op.f("ix_teacher_artifact_id"), "teacher", ["artifact_id"], unique=False)

    op.create_table(
        "job",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("teacher_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("factor_set_name", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("rq_job_id", sa.String(length=64), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("lease", sa.String(length=32), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("checkpoint_artifact_id", sa.Uuid(), nullable=True),
        sa.Column("checkpoint_step", sa.Integer(), nullable=True),
        sa.Column("resumed_from_step", sa.Integer(), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_job_status")
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_artifact_id"],
            ["artifact.id"],
            name=op.f("fk_job_checkpoint_artifact_id_artifact"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_job_dataset_id_dataset"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["teacher_id"], ["teacher.id"], name=op.f("fk_job_teacher_id_teacher"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_index(op.f("ix_job_checkpoint_artifact_id"), "job", ["checkpoint_artifact_id"], unique=False)
    op.create_index(op.f("ix_job_created_at"), "job", ["created_at"], unique=False)
    op.create_index(op.f("ix_job_dataset_id"), "job", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_job_status"), "job", ["status"], unique=False)
    op.create_index(op.f("ix_job_teacher_id"), "job", ["teacher_id"], unique=False)

    op.create_table(
        "factor_set",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("teacher_id", sa.Uuid(), nullable=False),
        sa.Column("dataset_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("input_spec", sa.JSON(), nullable=False),
        sa.Column("ckn_artifact_id", sa.Uuid(), nullable=False),
        sa.Column("manifest_artifact_id", sa.Uuid(), nullable=False),
        sa.Column("report_artifact_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ckn_artifact_id"],
            ["artifact.id"],
            name=op.f("fk_factor_set_ckn_artifact_id_artifact"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["dataset.id"], name=op.f("fk_factor_set_dataset_id_dataset"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_factor_set_job_id_job"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(
            ["manifest_artifact_id"],
            ["artifact.id"],
            name=op.f("fk_factor_set_manifest_artifact_id_artifact"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["report_artifact_id"],
            ["artifact.id"],
            name=op.f("fk_factor_set_report_artifact_id_artifact"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["teacher_id"], ["teacher.id"], name=op.f("fk_factor_set_teacher_id_teacher"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_factor_set")),
        sa.UniqueConstraint("job_id", name=op.f("uq_factor_set_job_id")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_factor_set_name_version")),
    )
    op.create_index(op.f("ix_factor_set_ckn_artifact_id"), "factor_set", ["ckn_artifact_id"], unique=False)
    op.create_index(op.f("ix_factor_set_created_at"), "factor_set", ["created_at"], unique=False)
    op.create_index(op.f("ix_factor_set_dataset_id"), "factor_set", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_factor_set_manifest_artifact_id"), "factor_set", ["manifest_artifact_id"], unique=False)
    op.create_index(op.f("ix_factor_set_name"), "factor_set", ["name"], unique=False)
    op.create_index(op.f("ix_factor_set_report_artifact_id"), "factor_set", ["report_artifact_id"], unique=False)
    op.create_index(op.f("ix_factor_set_teacher_id"), "factor_set", ["teacher_id"], unique=False)

    op.create_table(
        "assembly",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("factor_set_id", sa.Uuid(), nullable=False),
        sa.Column("tasks", sa.JSON(), nullable=False),
        sa.Column("tasks_key", sa.String(length=1024), nullable=False),
        sa.Column("combined", sa.Boolean(), nullable=False),
        sa.Column("graph_artifact_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["factor_set_id"], ["factor_set.id"], name=op.f("fk_assembly_factor_set_id_factor_set"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["graph_artifact_id"],
            ["artifact.id"],
            name=op.f("fk_assembly_graph_artifact_id_artifact"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assembly")),
        sa.UniqueConstraint(
            "factor_set_id", "tasks_key", "combined", name=op.f("uq_assembly_factor_set_id_tasks_key_combined")
        ),
    )
    op.create_index(op.f("ix_assembly_factor_set_id"), "assembly", ["factor_set_id"], unique=False)
    op.create_index(op.f("ix_assembly_graph_artifact_id"), "assembly", ["graph_artifact_id"], unique=False)

    op.create_table(
        "factor",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("factor_set_id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("output", sa.String(length=128), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("class_names", sa.JSON(), nullable=False),
        sa.Column("artifact_id", sa.Uuid(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"], ["artifact.id"], name=op.f("fk_factor_artifact_id_artifact"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["factor_set_id"], ["factor_set.id"], name=op.f("fk_factor_factor_set_id_factor_set"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_factor")),
        sa.UniqueConstraint("factor_set_id", "task", name=op.f("uq_factor_factor_set_id_task")),
    )
    op.create_index(op.f("ix_factor_artifact_id"), "factor", ["artifact_id"], unique=False)
    op.create_index(op.f("ix_factor_factor_set_id"), "factor", ["factor_set_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_factor_factor_set_id"), table_name="factor")
    op.drop_index(op.f("ix_factor_artifact_id"), table_name="factor")

    op.drop_table("factor")
    op.drop_index(op.f("ix_assembly_graph_artifact_id"), table_name="assembly")
    op.drop_index(op.f("ix_assembly_factor_set_id"), table_name="assembly")

    op.drop_table("assembly")
    op.drop_index(op.f("ix_factor_set_teacher_id"), table_name="factor_set")
    op.drop_index(op.f("ix_factor_set_report_artifact_id"), table_name="factor_set")
    op.drop_index(op.f("ix_factor_set_name"), table_name="factor_set")
    op.drop_index(op.f("ix_factor_set_manifest_artifact_id"), table_name="factor_set")
    op.drop_index(op.f("ix_factor_set_dataset_id"), table_name="factor_set")
    op.drop_index(op.f("ix_factor_set_created_at"), table_name="factor_set")
    op.drop_index(op.f("ix_factor_set_ckn_artifact_id"), table_name="factor_set")

    op.drop_table("factor_set")
    op.drop_index(op.f("ix_job_teacher_id"), table_name="job")
    op.drop_index(op.f("ix_job_status"), table_name="job")
    op.drop_index(op.f("ix_job_dataset_id"), table_name="job")
    op.drop_index(op.f("ix_job_created_at"), table_name="job")
    op.drop_index(op.f("ix_job_checkpoint_artifact_id"), table_name="job")

    op.drop_table("job")
    op.drop_index(op.f("ix_teacher_artifact_id"), table_name="teacher")

    op.drop_table("teacher")
    op.drop_index(op.f("ix_dataset_artifact_id"), table_name="dataset")

    op.drop_table("dataset")
    op.drop_table("artifact")
