"""admin: model switches and FAQ entries; merges the 0002/0003/0004 heads

Revision ID: 0006
Revises: 0002, 0003, 0004
Create Date: 2026-11-22 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = ("0002", "0003", "0004")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_switches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=96), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_model", sa.String(length=255), nullable=True),
        sa.Column("to_model", sa.String(length=255), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_switches")),
    )
    with op.batch_alter_table("model_switches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_switches_at"), ["at"], unique=False)
    op.create_table(
        "faq_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.String(length=96), nullable=False),
        sa.Column("intent", sa.String(length=64), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=96), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faq_entries")),
    )
    with op.batch_alter_table("faq_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_faq_entries_card_id"), ["card_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("faq_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_faq_entries_card_id"))
    op.drop_table("faq_entries")
    with op.batch_alter_table("model_switches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_switches_at"))
    op.drop_table("model_switches")
