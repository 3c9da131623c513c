"""The operation queue on SQLAlchemy: one row per request and kind makes a backend call owed
once; a lease, taken and renewed by conditional UPDATEs, lets one worker hold it at a time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.adapters.db.models import OperationRow
from bot.domain.errors import NotFound
from bot.domain.model import Operation, OperationKind, OperationState


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


def _write(row: OperationRow, operation: Operation) -> None:
    """Everything of ``operation`` that changes, onto its row."""
    row.state = operation.state.value
    row.attempts = operation.attempts
    row.next_attempt_at = operation.next_attempt_at
    row.intent = dict(operation.intent)
    row.prepared = operation.prepared
    row.lease_owner = operation.lease_owner
    row.lease_until = operation.lease_until
    row.last_error = operation.last_error


class SqlAlchemyOperationQueue:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enqueue(self, operation: Operation) -> bool:
        row = OperationRow(request_id=operation.request_id, kind=operation.kind.value)
        _write(row, operation)
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            return False
        operation.id = row.id
        return True

    def get(self, request_id: int, kind: OperationKind) -> Operation | None:
        row = self.session.scalars(
            select(OperationRow).where(
                OperationRow.request_id == request_id, OperationRow.kind == kind.value
            )
        ).one_or_none()
        return None if row is None else _to_operation(row)

    def save(self, operation: Operation) -> None:
        row = self.session.get(OperationRow, operation.id)
        if row is None:
            raise NotFound(f"There is no operation {operation.id}.")
        _write(row, operation)
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

    def due(self, now: datetime, limit: int) -> list[Operation]:
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
