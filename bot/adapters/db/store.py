"""The request store and unit of work on SQLAlchemy, for SQLite and PostgreSQL.

Two writers never both win: every request row carries a version that each UPDATE compares and
bumps, and ``get(..., for_update=True)`` also takes the row lock on PostgreSQL so that
concurrent approvers queue instead of retrying. Unique keys make approvals, owed operations and
sent notifications count once however often they are attempted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, exists, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from bot.adapters.db.models import (
    ApprovalRow,
    AuditRow,
    Base,
    ClaimedKeyRow,
    IdentityLinkRow,
    MessageRow,
    OperationRow,
    RequestRow,
)
from bot.adapters.db.outbox import owe_to_sinks
from bot.config import normalise_database_url
from bot.domain.errors import ConcurrentModification, NotFound
from bot.domain.model import (
    AccessRequest,
    Approval,
    AuditEvent,
    Decision,
    IdentityLink,
    Kind,
    Operation,
    OperationKind,
    OperationState,
    State,
)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each database needs for concurrent use.

    ``url`` as in DATABASE_URL (``postgres://``, ``postgresql://`` and ``sqlite:///`` all work;
    see :func:`bot.config.normalise_database_url`, whose ``ValueError`` it raises)."""
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, open transactions (savepoints need it).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # One writer at a time, waiting for its turn: SQLite's supported mode is a single
            # process, and this keeps read-then-write transactions from reading stale rows.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A host that drops packets fails in seconds, not after the system's TCP timeout.
    kwargs.setdefault("connect_args", {"connect_timeout": 10})
    # Slack listeners, the work after each acknowledgement and the backend workers each hold a
    # connection for a moment; with the default five, acknowledgements queue for one.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


# --- row <-> domain -----------------------------------------------------------------------


def _to_request(row: RequestRow) -> AccessRequest:
    return AccessRequest(
        id=row.id,
        kind=Kind(row.kind),
        parent_id=row.parent_id,
        requester_id=row.requester_id,
        cluster=row.cluster,
        role=row.role,
        namespace=row.namespace,
        duration=timedelta(seconds=row.duration_seconds),
        reason=row.reason,
        subject=row.subject,
        state=State(row.state),
        break_glass=row.break_glass,
        approved_by_policy=row.approved_by_policy,
        created_at=row.created_at,
        decided_at=row.decided_at,
        activated_at=row.activated_at,
        ends_at=row.ends_at,
        ended_at=row.ended_at,
        ended_by=row.ended_by,
        end_reason=row.end_reason,
        last_error=row.last_error,
        user_csr=row.user_csr,
        backend_ref=dict(row.backend_ref or {}),
        approvals=[
            Approval(a.approver_id, Decision(a.decision), a.decided_at, a.comment,
                     None if a.approved_seconds is None
                     else timedelta(seconds=a.approved_seconds))
            for a in row.approvals
        ],
        version=row.version,
        grantee_id=row.grantee_id,
        window_start=row.window_start,
        escalations_applied=row.escalations_applied,
        renotified=row.renotified,
    )


def _write_request(row: RequestRow, request: AccessRequest) -> None:
    row.kind = request.kind.value
    row.parent_id = request.parent_id
    row.requester_id = request.requester_id
    row.cluster = request.cluster
    row.role = request.role
    row.namespace = request.namespace
    row.duration_seconds = int(request.duration.total_seconds())
    row.reason = request.reason
    row.subject = request.subject
    row.state = request.state.value
    row.break_glass = request.break_glass
    row.approved_by_policy = request.approved_by_policy
    row.created_at = request.created_at
    row.decided_at = request.decided_at
    row.activated_at = request.activated_at
    row.ends_at = request.ends_at
    row.ended_at = request.ended_at
    row.ended_by = request.ended_by
    row.end_reason = request.end_reason
    row.last_error = request.last_error
    row.user_csr = request.user_csr
    row.backend_ref = dict(request.backend_ref)
    row.grantee_id = request.grantee_id
    row.window_start = request.window_start
    row.escalations_applied = request.escalations_applied
    row.renotified = request.renotified
    for approval in request.approvals[len(row.approvals):]:
        row.approvals.append(
            ApprovalRow(
                approver_id=approval.approver_id,
                decision=approval.decision.value,
                comment=approval.comment,
                decided_at=approval.decided_at,
                approved_seconds=None if approval.duration is None
                else int(approval.duration.total_seconds()),
            )
        )


def _to_operation(row: OperationRow) -> Operation:
    return Operation(
        id=row.id,
        request_id=row.request_id,
        kind=OperationKind(row.kind),
        state=OperationState(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        intent=dict(row.intent or {}),
        prepared=None if row.prepared is None else dict(row.prepared),
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        last_error=row.last_error,
    )


class SqlAlchemyRequestStore:
    def __init__(self, session: Session) -> None:
        self.session = session

    # requests

    def add(self, request: AccessRequest) -> AccessRequest:
        row = RequestRow()
        _write_request(row, request)
        self.session.add(row)
        self.session.flush()
        request.id = row.id
        request.version = row.version
        return request

    def _row(self, request_id: int, for_update: bool = False) -> RequestRow:
        query = select(RequestRow).where(RequestRow.id == request_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        row = self.session.scalars(query).one_or_none()
        if row is None:
            raise NotFound(f"There is no request #{request_id}.")
        return row

    def get(self, request_id: int, *, for_update: bool = False) -> AccessRequest:
        return _to_request(self._row(request_id, for_update))

    def save(self, request: AccessRequest) -> None:
        assert request.id is not None
        # Read in this same transaction, as a use case does: the session has it already.
        row = self.session.get(RequestRow, request.id) or self._row(request.id)
        if row.version != request.version:
            raise ConcurrentModification(
                f"Request {request.label} was changed by someone else meanwhile; try again."
            )
        _write_request(row, request)
        try:
            self.session.flush()
        except (StaleDataError, IntegrityError):
            raise ConcurrentModification(
                f"Request {request.label} was changed by someone else meanwhile; try again."
            ) from None
        request.version = row.version

    def find(
        self,
        *,
        requester_id: str | None = None,
        states: Sequence[State] | None = None,
        clusters: Sequence[str] | None = None,
        kind: Kind | None = None,
        parent_id: int | None = None,
        limit: int | None = 100,
        subject: str | None = None,
    ) -> list[AccessRequest]:
        query = select(RequestRow)
        if subject is not None:
            query = query.where(RequestRow.subject == subject)
        if requester_id is not None:
            query = query.where(RequestRow.requester_id == requester_id)
        if states is not None:
            query = query.where(RequestRow.state.in_([s.value for s in states]))
        if clusters is not None:
            query = query.where(RequestRow.cluster.in_(list(clusters)))
        if kind is not None:
            query = query.where(RequestRow.kind == kind.value)
        if parent_id is not None:
            query = query.where(RequestRow.parent_id == parent_id)
        query = query.order_by(RequestRow.created_at.desc(), RequestRow.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return [_to_request(row) for row in self.session.scalars(query)]

    def due_to_expire(self, now: datetime, limit: int) -> list[AccessRequest]:
        owed = exists().where(
            OperationRow.request_id == RequestRow.id,
            OperationRow.kind == OperationKind.REVOKE.value,
        )
        query = (
            select(RequestRow)
            .where(
                RequestRow.state == State.ACTIVE.value,
                RequestRow.ends_at <= now,
                RequestRow.kind == Kind.ACCESS.value,
                ~owed,
            )
            .order_by(RequestRow.ends_at)
            .limit(limit)
        )
        return [_to_request(row) for row in self.session.scalars(query)]

    def active_ending_before(self, until: datetime, limit: int) -> list[AccessRequest]:
        query = (
            select(RequestRow)
            .where(RequestRow.state == State.ACTIVE.value, RequestRow.ends_at < until,
                   RequestRow.kind == Kind.ACCESS.value)
            .order_by(RequestRow.ends_at)
            .limit(limit)
        )
        return [_to_request(row) for row in self.session.scalars(query)]

    def pending_created_before(self, before: datetime, limit: int) -> list[AccessRequest]:
        query = (
            select(RequestRow)
            .where(RequestRow.state == State.PENDING.value, RequestRow.created_at <= before)
            .order_by(RequestRow.created_at)
            .limit(limit)
        )
        return [_to_request(row) for row in self.session.scalars(query)]

    # audit

    def record(self, event: AuditEvent) -> None:
        self.session.add(
            row := AuditRow(
                at=event.at,
                actor=event.actor,
                action=event.action,
                request_id=event.request_id,
                details=dict(event.details),
            )
        )
        owe_to_sinks(self.session, row)  # the audit stream's outbox rows, in this transaction

    def audit_events(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        query = select(AuditRow).order_by(AuditRow.id)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        for row in self.session.scalars(query.execution_options(yield_per=500)):
            yield AuditEvent(
                id=row.id,
                at=row.at,
                actor=row.actor,
                action=row.action,
                request_id=row.request_id,
                details=dict(row.details or {}),
            )

    # operations

    def enqueue(self, operation: Operation) -> bool:
        row = OperationRow(
            request_id=operation.request_id,
            kind=operation.kind.value,
            state=operation.state.value,
            attempts=operation.attempts,
            next_attempt_at=operation.next_attempt_at,
            intent=dict(operation.intent),
            prepared=operation.prepared,
        )
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            return False
        operation.id = row.id
        return True

    def operation(self, request_id: int, kind: OperationKind) -> Operation | None:
        row = self.session.scalars(
            select(OperationRow).where(
                OperationRow.request_id == request_id, OperationRow.kind == kind.value
            )
        ).one_or_none()
        return None if row is None else _to_operation(row)

    def save_operation(self, operation: Operation) -> None:
        row = self.session.get(OperationRow, operation.id)
        if row is None:
            raise NotFound(f"There is no operation {operation.id}.")
        row.state = operation.state.value
        row.attempts = operation.attempts
        row.next_attempt_at = operation.next_attempt_at
        row.intent = dict(operation.intent)
        row.prepared = operation.prepared
        row.lease_owner = operation.lease_owner
        row.lease_until = operation.lease_until
        row.last_error = operation.last_error
        self.session.flush()

    def claim(self, operation_id: int, owner: str, now: datetime, until: datetime) -> bool:
        result = self.session.execute(
            update(OperationRow)
            .where(
                OperationRow.id == operation_id,
                OperationRow.state == OperationState.PENDING.value,
                OperationRow.next_attempt_at <= now,
                (OperationRow.lease_until.is_(None)) | (OperationRow.lease_until < now),
            )
            .values(
                lease_owner=owner, lease_until=until, attempts=OperationRow.attempts + 1
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def renew(self, operation_id: int, owner: str, until: datetime) -> bool:
        result = self.session.execute(
            update(OperationRow)
            .where(
                OperationRow.id == operation_id,
                OperationRow.state == OperationState.PENDING.value,
                OperationRow.lease_owner == owner,
            )
            .values(lease_until=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    def due_operations(self, now: datetime, limit: int) -> list[Operation]:
        query = (
            select(OperationRow)
            .where(
                OperationRow.state == OperationState.PENDING.value,
                OperationRow.next_attempt_at <= now,
                (OperationRow.lease_until.is_(None)) | (OperationRow.lease_until < now),
            )
            .order_by(OperationRow.next_attempt_at)
            .limit(limit)
        )
        return [_to_operation(row) for row in self.session.scalars(query)]

    # identity links

    def link(self, slack_user_id: str, provider: str) -> IdentityLink | None:
        row = self.session.get(IdentityLinkRow, (slack_user_id, provider))
        if row is None:
            return None
        return IdentityLink(
            slack_user_id=row.slack_user_id,
            provider=row.provider,
            username=row.username,
            confirmed=row.confirmed,
            created_at=row.created_at,
            confirmed_by=row.confirmed_by,
        )

    def save_link(self, link: IdentityLink) -> None:
        self.session.merge(
            IdentityLinkRow(
                slack_user_id=link.slack_user_id,
                provider=link.provider,
                username=link.username,
                confirmed=link.confirmed,
                created_at=link.created_at,
                confirmed_by=link.confirmed_by,
            )
        )
        self.session.flush()

    # once-only keys

    def claim_key(self, key: str, now: datetime) -> bool:
        # One statement that skips a duplicate: replicas racing for a key never fail.
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = Base.metadata.tables[ClaimedKeyRow.__tablename__]
        statement = (insert(table).values(key=key, claimed_at=now)
                     .on_conflict_do_nothing(index_elements=["key"])
                     .returning(table.c.key))
        return self.session.execute(statement).first() is not None

    def release_key(self, key: str) -> None:
        self.session.execute(delete(ClaimedKeyRow).where(ClaimedKeyRow.key == key))

    def forget_keys(self, claimed_before: datetime) -> int:
        result = self.session.execute(
            delete(ClaimedKeyRow).where(ClaimedKeyRow.claimed_at < claimed_before))
        return int(getattr(result, "rowcount", 0) or 0)

    # messages

    def add_message(self, request_id: int, purpose: str, channel: str, ts: str) -> None:
        self.session.merge(self._message(request_id, purpose, channel) or MessageRow(
            request_id=request_id, purpose=purpose, channel=channel, ts=ts))
        self.session.flush()

    def _message(self, request_id: int, purpose: str, channel: str) -> MessageRow | None:
        return self.session.scalars(select(MessageRow).where(
            MessageRow.request_id == request_id, MessageRow.purpose == purpose,
            MessageRow.channel == channel)).one_or_none()

    def messages(self, request_id: int, purpose: str) -> list[tuple[str, str]]:
        rows = self.session.scalars(
            select(MessageRow)
            .where(MessageRow.request_id == request_id, MessageRow.purpose == purpose)
            .order_by(MessageRow.id)
        )
        return [(row.channel, row.ts) for row in rows]


class SqlAlchemyUnitOfWork:
    """One transaction over the store; leaving without :meth:`commit` rolls back."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> SqlAlchemyUnitOfWork:
        self.session = self._session_factory()
        self.store = SqlAlchemyRequestStore(self.session)
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        try:
            self.session.commit()
        except (StaleDataError, IntegrityError):
            self.session.rollback()
            raise ConcurrentModification(
                "Someone else changed the same request meanwhile; try again."
            ) from None


def unit_of_work_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
