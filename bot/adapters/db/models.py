"""The tables. Alembic migrations in ``migrations/`` must match these (``alembic check``).

Timestamps are stored as UTC and come back timezone-aware on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class RequestRow(Base):
    __tablename__ = "access_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("access_requests.id"))
    requester_id: Mapped[str] = mapped_column(String(32))
    cluster: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(63))
    namespace: Mapped[str | None] = mapped_column(String(63))
    duration_seconds: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_by_policy: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    activated_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(32))
    end_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    user_csr: Mapped[str | None] = mapped_column(Text)
    backend_ref: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    grantee_id: Mapped[str | None] = mapped_column(String(32))
    """Who receives the access when someone asked on their behalf; NULL: the requester."""
    window_start: Mapped[datetime | None]
    escalations_applied: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    renotified: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    approvals: Mapped[list[ApprovalRow]] = relationship(
        back_populates="request", order_by="ApprovalRow.id", lazy="selectin"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
    __table_args__ = (
        Index("ix_access_requests_requester_created", "requester_id", "created_at"),
        Index("ix_access_requests_state_cluster", "state", "cluster"),
        Index("ix_access_requests_state_ends_at", "state", "ends_at"),
        Index("ix_access_requests_state_created", "state", "created_at"),
        Index("ix_access_requests_parent_id", "parent_id"),
        Index("ix_access_requests_created_at", "created_at"),
        Index("ix_access_requests_grantee_created", "grantee_id", "created_at"),
    )


ONE_PENDING_INDEX = "uq_access_requests_one_pending"
"""One pending access request per grantee, cluster, role and namespace: two people filing the
same at the same moment (or someone and another for them) cannot both store it. The grantee is
the requester where ``grantee_id`` is NULL; a NULL namespace counts as one namespace."""
ONE_PENDING_WHERE = "state = 'pending' AND kind = 'access'"
Index(ONE_PENDING_INDEX,
      func.coalesce(RequestRow.grantee_id, RequestRow.requester_id), RequestRow.cluster,
      RequestRow.role, func.coalesce(RequestRow.namespace, ""),
      unique=True, sqlite_where=text(ONE_PENDING_WHERE),
      postgresql_where=text(ONE_PENDING_WHERE))


class ApprovalRow(Base):
    """One approver's decision; the unique key makes a double click count once."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"))
    approver_id: Mapped[str] = mapped_column(String(32))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime]
    approved_seconds: Mapped[int | None] = mapped_column(Integer)
    """A shorter duration approved than asked; NULL: as asked (or a denial)."""

    request: Mapped[RequestRow] = relationship(back_populates="approvals")

    __table_args__ = (UniqueConstraint("request_id", "approver_id"),)


class AuditRow(Base):
    """Append-only: the code inserts and reads, never updates or deletes."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("access_requests.id"), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OperationRow(Base):
    """A backend call owed for a request; one per request and kind."""

    __tablename__ = "operations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    intent: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prepared: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("request_id", "kind"),
        Index("ix_operations_state_next_attempt_at", "state", "next_attempt_at"),
    )


class IdentityLinkRow(Base):
    __tablename__ = "identity_links"

    slack_user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    username: Mapped[str] = mapped_column(String(255))
    confirmed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    confirmed_by: Mapped[str | None] = mapped_column(String(32))


class ClaimedKeyRow(Base):
    """A unique key claimed once across all replicas: a reminder for one week
    (``remind:U123:2026-W48``)."""

    __tablename__ = "claimed_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(index=True)


class SlackInboxRow(Base):
    """Every Slack request the bot acknowledged, by its signature (so that a replay is refused
    on any replica), with its body until a worker has done what it asks."""

    __tablename__ = "slack_inbox"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    body: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    done_at: Mapped[datetime | None]


class MessageRow(Base):
    """Where a request's messages were posted, so they can be updated in place."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))

    __table_args__ = (UniqueConstraint("request_id", "purpose", "channel"),)


class AuditDeliveryRow(Base):
    """An audit event owed to one configured audit sink: written in the transaction that writes
    the event, leased by one delivery worker at a time, kept after delivery for a while."""

    __tablename__ = "audit_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    sink: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None] = mapped_column(index=True)
    last_error: Mapped[str | None] = mapped_column(Text)

    event: Mapped[AuditRow] = relationship()

    __table_args__ = (
        UniqueConstraint("event_id", "sink"),
        Index("ix_audit_deliveries_sink_due", "sink", "delivered_at", "next_attempt_at"),
    )


class AccessReviewRow(Base):
    """One audience's weekly access review: the week (``period``), who it is for, and where it
    was posted so that it is updated in place."""

    __tablename__ = "access_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(32))
    audience: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    channel: Mapped[str | None] = mapped_column(String(32))
    ts: Mapped[str | None] = mapped_column(String(32))

    items: Mapped[list[AccessReviewItemRow]] = relationship(
        order_by="AccessReviewItemRow.id", lazy="selectin")

    __table_args__ = (UniqueConstraint("period", "audience"),)


class AccessReviewItemRow(Base):
    """A grant listed in a review, in the order listed."""

    __tablename__ = "access_review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("access_reviews.id"))
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), index=True)
    carried_over: Mapped[bool] = mapped_column(Boolean, default=False)

    grant: Mapped[RequestRow] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("review_id", "grant_id"),)


class AccessReviewDecisionRow(Base):
    """The one decision on a grant in a week's review; the unique key makes a double click, a
    second reviewer or a second replica count once."""

    __tablename__ = "access_review_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(String(32))
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_requests.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    decided_by: Mapped[str] = mapped_column(String(32))
    decided_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("period", "grant_id"),)
