"""records: indexes for the recovery passes (every ~2 s per gateway worker they look for
unanswered messages by status and age, and for a pushed reply by reply_to_id)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 13:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_status_created", ["status", "created_at"])
        batch_op.create_index(batch_op.f("ix_messages_reply_to_id"), ["reply_to_id"])


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_reply_to_id"))
        batch_op.drop_index("ix_messages_status_created")
