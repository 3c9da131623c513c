"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 12:29:28.716541
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.adapters.db.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("requester_id", sa.String(length=32), nullable=False),
        sa.Column("cluster", sa.String(length=63), nullable=False),
        sa.Column("role", sa.String(length=63), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("approved_by_policy", sa.Boolean(), nullable=False),
        sa.Column("created_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("activated_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ends_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=32), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("user_csr", sa.Text(), nullable=True),
        sa.Column("backend_ref", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["access_requests.id"],
            name=op.f("fk_access_requests_parent_id_access_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_requests")),
    )
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.create_index("ix_access_requests_parent_id", ["parent_id"], unique=False)
        batch_op.create_index(
            "ix_access_requests_requester_created", ["requester_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_access_requests_state_cluster", ["state", "cluster"], unique=False
        )
        batch_op.create_index(
            "ix_access_requests_state_created", ["state", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_access_requests_state_ends_at", ["state", "ends_at"], unique=False
        )

    op.create_table(
        "claimed_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("claimed_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_claimed_keys")),
    )
    with op.batch_alter_table("claimed_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_claimed_keys_claimed_at"), ["claimed_at"], unique=False
        )

    op.create_table(
        "identity_links",
        sa.Column("slack_user_id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("created_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_by", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("slack_user_id", "provider", name=op.f("pk_identity_links")),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("approver_id", sa.String(length=32), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_approvals_request_id_access_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
        sa.UniqueConstraint(
            "request_id", "approver_id", name=op.f("uq_approvals_request_id_approver_id")
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_audit_events_request_id_access_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_events_request_id"), ["request_id"], unique=False
        )

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_messages_request_id_access_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "request_id", "purpose", "channel", name=op.f("uq_messages_request_id_purpose_channel")
        ),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_request_id"), ["request_id"], unique=False)

    op.create_table(
        "operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("intent", sa.JSON(), nullable=False),
        sa.Column("prepared", sa.JSON(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", bot.adapters.db.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["access_requests.id"],
            name=op.f("fk_operations_request_id_access_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
        sa.UniqueConstraint("request_id", "kind", name=op.f("uq_operations_request_id_kind")),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_operations_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_index("ix_operations_state_next_attempt_at")

    op.drop_table("operations")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_request_id"))

    op.drop_table("messages")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_request_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))

    op.drop_table("audit_events")
    op.drop_table("approvals")
    op.drop_table("identity_links")
    with op.batch_alter_table("claimed_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claimed_keys_claimed_at"))

    op.drop_table("claimed_keys")
    with op.batch_alter_table("access_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_access_requests_state_ends_at")
        batch_op.drop_index("ix_access_requests_state_created")
        batch_op.drop_index("ix_access_requests_state_cluster")
        batch_op.drop_index("ix_access_requests_requester_created")
        batch_op.drop_index("ix_access_requests_parent_id")

    op.drop_table("access_requests")
