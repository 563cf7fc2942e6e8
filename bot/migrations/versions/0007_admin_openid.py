"""handoff: an admin's WeChat openid (admins are pushed about cases nobody on duty can take)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wechat_openid", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_accounts_wechat_openid"), ["wechat_openid"])


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_wechat_openid"))
        batch_op.drop_column("wechat_openid")
