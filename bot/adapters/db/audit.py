"""The audit trail on SQLAlchemy: rows are added, never changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from bot.adapters.db.mapping import Columns, document
from bot.adapters.db.models import AuditRow
from bot.adapters.db.outbox import owe_to_sinks, sinks_of
from bot.domain.model import AuditEvent

EVENT = Columns(AuditEvent, "at", "actor", "action", "request_id", document("details"),
                loaded_only=("id",))
TABLE: Table = AuditRow.__table__  # type: ignore[assignment]


class SqlAlchemyAuditTrail:
    """Events are kept as they are recorded and inserted together, through their column
    mapping, when the unit of work commits (:meth:`write`): one statement for all of a
    transaction's events (and one for what they owe the audit sinks), not the ORM's flush."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._pending: list[dict[str, Any]] = []

    def record(self, event: AuditEvent) -> None:
        self._pending.append(EVENT.values(event))

    def write(self) -> None:
        """Insert the events recorded since the last write, in the order they were recorded,
        and the outbox rows they owe the audit sinks (:func:`owe_to_sinks`)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        sinks = sinks_of(self.session)
        connection = self.session.connection()
        if not sinks:
            connection.execute(insert(TABLE), pending)
            return
        ids = connection.execute(
            insert(TABLE).returning(TABLE.c.id, sort_by_parameter_order=True), pending,
        ).scalars().all()
        owe_to_sinks(self.session, sinks,
                     [(event_id, values["at"]) for event_id, values in zip(ids, pending,
                                                                           strict=True)])

    def events(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        self.write()
        query = select(AuditRow).order_by(AuditRow.id)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        for row in self.session.scalars(query.execution_options(yield_per=500)):
            yield EVENT.load(row)
