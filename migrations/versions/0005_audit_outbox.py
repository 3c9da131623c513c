"""audit outbox: each audit event owed to each configured audit sink

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.adapters.db.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    moment = bot.adapters.db.models.UTCDateTime(timezone=True)
    op.create_table(
        "audit_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", moment, nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", moment, nullable=True),
        sa.Column("delivered_at", moment, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["audit_events.id"],
                                name=op.f("fk_audit_deliveries_event_id_audit_events")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_deliveries")),
        sa.UniqueConstraint("event_id", "sink", name=op.f("uq_audit_deliveries_event_id_sink")),
    )
    with op.batch_alter_table("audit_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_deliveries_delivered_at"), ["delivered_at"],
                              unique=False)
        batch_op.create_index("ix_audit_deliveries_sink_due",
                              ["sink", "delivered_at", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_deliveries_sink_due")
        batch_op.drop_index(batch_op.f("ix_audit_deliveries_delivered_at"))
    op.drop_table("audit_deliveries")
