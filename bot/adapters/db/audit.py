"""The audit trail on SQLAlchemy: rows are added, never changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.adapters.db.mapping import Columns, document
from bot.adapters.db.models import AuditRow
from bot.adapters.db.outbox import owe_to_sinks
from bot.domain.model import AuditEvent

EVENT = Columns(AuditEvent, "at", "actor", "action", "request_id", document("details"),
                loaded_only=("id",))


class SqlAlchemyAuditTrail:
    def __init__(self, session: Session) -> None:
        self.session = session

    def record(self, event: AuditEvent) -> None:
        self.session.add(row := AuditRow(**EVENT.values(event)))
        owe_to_sinks(self.session, row)  # the audit stream's outbox rows, in this transaction

    def events(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        query = select(AuditRow).order_by(AuditRow.id)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        for row in self.session.scalars(query.execution_options(yield_per=500)):
            yield EVENT.load(row)
