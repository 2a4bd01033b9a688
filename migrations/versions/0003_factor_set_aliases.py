"""Factor set aliases: ``name@alias`` names one version of a factor set and can be moved.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "factor_set_alias",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("factor_set_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["factor_set_id"],
            ["factor_set.id"],
            name=op.f("fk_factor_set_alias_factor_set_id_factor_set"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_factor_set_alias")),
        sa.UniqueConstraint("name", "alias", name=op.f("uq_factor_set_alias_name_alias")),
    )
    op.create_index(op.f("ix_factor_set_alias_factor_set_id"), "factor_set_alias", ["factor_set_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_factor_set_alias_factor_set_id"), table_name="factor_set_alias")
    op.drop_table("factor_set_alias")
