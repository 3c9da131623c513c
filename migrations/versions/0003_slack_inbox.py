"""slack inbox: replay keys and the work each acknowledged request asks for

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.adapters.db.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_inbox",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("received_at", bot.adapters.db.models.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", bot.adapters.db.models.UTCDateTime(timezone=True),
                  nullable=True),
        sa.Column("done_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_slack_inbox")),
    )
    with op.batch_alter_table("slack_inbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slack_inbox_received_at"), ["received_at"],
                              unique=False)
    # Replay keys lived among the claimed keys before; they are useless after ten minutes.
    op.execute("DELETE FROM claimed_keys WHERE key LIKE 'slack-request:%'")


def downgrade() -> None:
    with op.batch_alter_table("slack_inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slack_inbox_received_at"))
    op.drop_table("slack_inbox")
