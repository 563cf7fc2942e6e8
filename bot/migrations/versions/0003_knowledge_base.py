"""knowledge base: cards and feedback

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-22 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kb_cards",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("crops", sa.JSON(), nullable=False),
        sa.Column("category", sa.String(length=24), nullable=False),
        sa.Column("topic", sa.String(length=96), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("symptoms", sa.Text(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("control", sa.JSON(), nullable=False),
        sa.Column("season", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(length=96), nullable=False),
        sa.Column("reviewed", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("origin", sa.String(length=48), nullable=False),
        sa.Column("origin_ref", sa.String(length=96), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("helpful", sa.Integer(), nullable=False),
        sa.Column("not_helpful", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_cards")),
    )
    op.create_index("ix_kb_cards_status_updated", "kb_cards", ["status", "updated_at"])
    op.create_table(
        "kb_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.String(length=96), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_id"], ["kb_cards.id"], name=op.f("fk_kb_feedback_card_id_kb_cards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_feedback")),
    )
    op.create_index(op.f("ix_kb_feedback_card_id"), "kb_feedback", ["card_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_kb_feedback_card_id"), table_name="kb_feedback")
    op.drop_table("kb_feedback")
    op.drop_index("ix_kb_cards_status_updated", table_name="kb_cards")
    op.drop_table("kb_cards")
