"""access reviews: each audience's weekly review, its grants, and one decision per grant a week

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.adapters.db.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    moment = bot.adapters.db.models.UTCDateTime(timezone=True)
    op.create_table(
        "access_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("audience", sa.String(length=32), nullable=False),
        sa.Column("created_at", moment, nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("ts", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_reviews")),
        sa.UniqueConstraint("period", "audience", name=op.f("uq_access_reviews_period_audience")),
    )
    op.create_table(
        "access_review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("carried_over", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["access_requests.id"],
                                name=op.f("fk_access_review_items_grant_id_access_requests")),
        sa.ForeignKeyConstraint(["review_id"], ["access_reviews.id"],
                                name=op.f("fk_access_review_items_review_id_access_reviews")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_review_items")),
        sa.UniqueConstraint("review_id", "grant_id",
                            name=op.f("uq_access_review_items_review_id_grant_id")),
    )
    with op.batch_alter_table("access_review_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_review_items_grant_id"), ["grant_id"],
                              unique=False)
    op.create_table(
        "access_review_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=32), nullable=False),
        sa.Column("decided_at", moment, nullable=False),
        sa.ForeignKeyConstraint(["grant_id"], ["access_requests.id"],
                                name=op.f("fk_access_review_decisions_grant_id_access_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_review_decisions")),
        sa.UniqueConstraint("period", "grant_id",
                            name=op.f("uq_access_review_decisions_period_grant_id")),
    )
    with op.batch_alter_table("access_review_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_review_decisions_grant_id"), ["grant_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("access_review_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_review_decisions_grant_id"))
    op.drop_table("access_review_decisions")
    with op.batch_alter_table("access_review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_review_items_grant_id"))
    op.drop_table("access_review_items")
    op.drop_table("access_reviews")
