"""policy part two: the grantee asked for, scheduled windows, approvals for less, escalation
and reminders counted on the request

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.adapters.db.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows: asked for themselves, unscheduled, approved as asked, not escalated yet.
    # Their reminders so far were counted by claimed keys; counting starts at 0 here, and the
    # keys already claimed still keep a reminder from going twice.
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grantee_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column(
            "window_start", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("escalations_applied", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("renotified", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.create_index("ix_access_requests_grantee_created",
                              ["grantee_id", "created_at"], unique=False)
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Not in batch mode: SQLite (3.35 and later) drops these columns in place, where a batch
    # would copy access_requests and drop the original, which the rows of approvals, audit
    # events and operations pointing at it forbid.
    op.drop_column("approvals", "approved_seconds")
    op.drop_index("ix_access_requests_grantee_created", table_name="access_requests")
    for column in ("renotified", "escalations_applied", "window_start", "grantee_id"):
        op.drop_column("access_requests", column)
