"""The audit outbox on SQLAlchemy: one row per audit event and configured sink.

:func:`owe_to_sinks` adds the rows beside the audit rows, in their transaction, so that the events
and what they owe commit or roll back together. :class:`SqlAlchemyAuditOutbox` is the delivery side:
a worker leases due rows with one statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that
replicas take different rows without waiting for each other; SQLite has one writer at a time),
as the Slack inbox does. A worker that dies leaves its lease to run out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from bot.adapters.db.models import AuditDeliveryRow, AuditRow
from bot.domain.model import AuditEvent
from bot.domain.stream import PendingDelivery, SinkBacklog

SINKS_KEY = "k8s_access_audit_sinks"
"""Where a session keeps the names of the sinks each audit event is owed to."""
ROW = AuditDeliveryRow
ORPHANS_EVERY = timedelta(hours=1)
"""How often one process looks for rows owed to sinks removed from the configuration."""
TABLE: Table = AuditDeliveryRow.__table__  # type: ignore[assignment]


def route_to_sinks(sessions: sessionmaker[Session], sinks: Sequence[str]) -> None:
    """Make every session of ``sessions`` owe each audit event it records to ``sinks``."""
    sessions.configure(info={SINKS_KEY: tuple(sinks)})


def sinks_of(session: Session) -> tuple[str, ...]:
    """The sinks ``session``'s audit events are owed to (:func:`route_to_sinks`)."""
    return tuple(session.info.get(SINKS_KEY, ()))


def owe_to_sinks(session: Session, sinks: Sequence[str],
                 events: Sequence[tuple[int, datetime]]) -> None:
    """Insert an outbox row for each of ``events`` (their IDs and times, just inserted in
    ``session``'s transaction) and each of ``sinks``, in one statement."""
    rows = [{"event_id": event_id, "sink": sink, "attempts": 0, "next_attempt_at": at}
            for event_id, at in events for sink in sinks]
    if rows:
        session.connection().execute(insert(TABLE), rows)


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(ROW.lease_until.is_(None), ROW.lease_until < now)


class SqlAlchemyAuditOutbox:
    """:class:`bot.domain.stream.AuditOutbox` on the ``audit_deliveries`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._orphans_forgotten: datetime | None = None
        """``delivered_before`` of the last :meth:`forget` that looked for orphaned rows."""

    def claim(self, sink: str, owner: str, now: datetime, until: datetime,
              limit: int) -> list[PendingDelivery]:
        due = (select(ROW.id)
               .where(ROW.sink == sink, ROW.delivered_at.is_(None), ROW.next_attempt_at <= now,
                      _free(now))
               .order_by(ROW.event_id).limit(limit)
               .with_for_update(skip_locked=True))
        statement = (update(ROW).where(ROW.id.in_(due.scalar_subquery()))
                     .values(lease_owner=owner, lease_until=until)
                     .returning(ROW.id))
        with self._engine.begin() as connection:
            if connection.execute(select(ROW.id).where(
                    ROW.sink == sink, ROW.delivered_at.is_(None), ROW.attempts > 0,
                    ROW.next_attempt_at > now).limit(1)).first() is not None:
                return []  # the sink failed and backs off: its other rows wait too
            ids = list(connection.execute(statement).scalars())
            if not ids:
                return []
            rows = connection.execute(
                select(ROW.id, ROW.attempts, AuditRow.id, AuditRow.at, AuditRow.actor,
                       AuditRow.action, AuditRow.request_id, AuditRow.details)
                .join(AuditRow, AuditRow.id == ROW.event_id)
                .where(ROW.id.in_(ids)).order_by(ROW.event_id)).all()
        return [PendingDelivery(id=row_id, sink=sink, attempts=attempts, event=AuditEvent(
                    id=event_id, at=at, actor=actor, action=action, request_id=request_id,
                    details=dict(details or {})))
                for row_id, attempts, event_id, at, actor, action, request_id, details in rows]

    def delivered(self, ids: Sequence[int], now: datetime) -> None:
        if not ids:
            return
        with self._engine.begin() as connection:
            connection.execute(update(ROW).where(ROW.id.in_(list(ids))).values(
                delivered_at=now, lease_owner=None, lease_until=None, last_error=None))

    def release(self, ids: Sequence[int], owner: str) -> None:
        if not ids:
            return
        with self._engine.begin() as connection:
            connection.execute(update(ROW).where(ROW.id.in_(list(ids)), ROW.lease_owner == owner)
                               .values(lease_owner=None, lease_until=None))

    def failed(self, delivery_id: int, error: str) -> int:
        with self._engine.begin() as connection:
            sink = connection.execute(
                update(ROW).where(ROW.id == delivery_id)
                .values(attempts=ROW.attempts + 1, last_error=error[:2000])
                .returning(ROW.sink)).scalar_one()
            return int(connection.execute(
                select(func.max(ROW.attempts))
                .where(ROW.sink == sink, ROW.delivered_at.is_(None))).scalar_one() or 0)

    def postpone(self, delivery_id: int, until: datetime) -> None:
        with self._engine.begin() as connection:
            connection.execute(update(ROW).where(ROW.id == delivery_id).values(
                next_attempt_at=until, lease_owner=None, lease_until=None))

    def backlog(self, sinks: Sequence[str]) -> dict[str, SinkBacklog]:
        found = {sink: SinkBacklog(0, None, 0, None) for sink in sinks}
        if not sinks:
            return found
        waiting = and_(ROW.sink.in_(list(sinks)), ROW.delivered_at.is_(None))
        with self._engine.connect() as connection:
            totals = connection.execute(
                select(ROW.sink, func.count(), func.min(AuditRow.at), func.max(ROW.attempts))
                .join(AuditRow, AuditRow.id == ROW.event_id)
                .where(waiting).group_by(ROW.sink)).all()
            for sink, count, oldest, attempts in totals:
                error = connection.execute(
                    select(ROW.last_error)
                    .where(waiting, ROW.sink == sink, ROW.last_error.is_not(None))
                    .order_by(ROW.attempts.desc(), ROW.id).limit(1)).scalar()
                found[sink] = SinkBacklog(int(count), oldest, int(attempts or 0), error)
        return found

    def forget(self, delivered_before: datetime, sinks: Sequence[str]) -> int:
        """Delivered rows each time (a range of an index); the rows of removed sinks at most
        every :data:`ORPHANS_EVERY` (finding them reads every row still waiting, a sink that
        is down may have many, and the stream runs every few seconds)."""
        gone = and_(ROW.delivered_at.is_not(None), ROW.delivered_at < delivered_before)
        last = self._orphans_forgotten
        if last is None or delivered_before - last >= ORPHANS_EVERY:
            self._orphans_forgotten = delivered_before
            gone = or_(gone, and_(ROW.delivered_at.is_(None), ROW.sink.not_in(list(sinks)),
                                  ROW.next_attempt_at < delivered_before,
                                  _free(delivered_before)))
        with self._engine.begin() as connection:
            result = connection.execute(delete(ROW).where(gone))
        return int(getattr(result, "rowcount", 0) or 0)

