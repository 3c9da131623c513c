"""The operation queue on SQLAlchemy: one row per request and kind makes a backend call owed
once; a lease, taken and renewed by conditional UPDATEs, lets one worker hold it at a time.

Operations are read and written as plain statements on the transaction's connection, through
the record's column mapping: no ORM row of an operation is ever held, so none can be stale."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Table, bindparam, func, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.adapters.db.among import among
from bot.adapters.db.mapping import Columns, document, enum
from bot.adapters.db.models import OperationRow
from bot.domain.errors import NotFound
from bot.domain.model import Operation, OperationKind, OperationState

TABLE: Table = OperationRow.__table__  # type: ignore[assignment]


OPERATION = Columns(
    Operation,
    "request_id", enum("kind", OperationKind), enum("state", OperationState), "attempts",
    "next_attempt_at", document("intent"), document("prepared", optional=True), "lease_owner",
    "lease_until", "last_error",
    loaded_only=("id",),
)


class SqlAlchemyOperationQueue:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enqueue(self, operation: Operation) -> bool:
        """Owe ``operation`` unless its request owes one of its kind already: one statement
        (INSERT … ON CONFLICT DO NOTHING), no savepoint."""
        return bool(self.enqueue_many([operation]))

    def _execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.session.connection().execute(statement, parameters)

    def get(self, request_id: int, kind: OperationKind) -> Operation | None:
        row = self._execute(_OWED, {"request_id": request_id, "kind": kind.value}).one_or_none()
        return None if row is None else OPERATION.load(row)

    def save(self, operation: Operation) -> None:
        """Write ``operation`` onto its row: one UPDATE, the row not read first."""
        result = self._execute(_SAVE, {**{f"new_{column}": value for column, value
                                          in OPERATION.values(operation).items()},
                                       "row_id": operation.id})
        if result.rowcount != 1:
            raise NotFound(f"There is no operation {operation.id}.")

    def claim(self, operation_id: int, owner: str, now: datetime, until: datetime) -> bool:
        result = self._execute(
            update(TABLE)
            .where(TABLE.c.id == operation_id, *_claimable(now))
            .values(lease_owner=owner, lease_until=until, attempts=TABLE.c.attempts + 1))
        return bool(result.rowcount == 1)

    def renew(self, operation_id: int, owner: str, until: datetime) -> bool:
        return operation_id in self.renew_many([operation_id], owner, until)

    def due(self, now: datetime, limit: int) -> list[Operation]:
        query = (
            select(TABLE)
            .where(*_claimable(now))
            .order_by(TABLE.c.next_attempt_at)
            .limit(limit)
        )
        return [OPERATION.load(row) for row in self._execute(query)]

    # --- many at a time: one statement for a whole batch --------------------------------

    def enqueue_many(self, operations: Sequence[Operation]) -> list[Operation]:
        insert: Any = pg_insert if self.session.get_bind().dialect.name == "postgresql" \
            else sqlite_insert
        if not operations:
            return []
        rows = [OPERATION.values(operation) for operation in operations]
        shared = {column: value for column, value in rows[0].items() if column != "request_id"}
        if insert is pg_insert and all(
                {column: value for column, value in row.items() if column != "request_id"}
                == shared for row in rows[1:]):
            # One statement whatever the batch's size: the request IDs as one array, the
            # rest once (a batch of revocations differs only in its requests).
            request_ids = func.unnest(bindparam(None, [row["request_id"] for row in rows],
                                                type_=ARRAY(Integer)))
            columns = ["request_id", *shared]
            statement = insert(TABLE).from_select(columns, select(
                request_ids, *(literal(value, TABLE.c[column].type)
                               for column, value in shared.items())))
            parameters: Any = None
        else:
            statement, parameters = insert(TABLE), rows
        returning = (statement.on_conflict_do_nothing(index_elements=["request_id", "kind"])
                     .returning(TABLE.c.id, TABLE.c.request_id, TABLE.c.kind))
        made = {(request_id, kind): id_ for id_, request_id, kind
                in self._execute(returning, parameters)}
        owed = []
        for operation in operations:
            operation.id = made.get((operation.request_id, operation.kind.value))
            if operation.id is not None:
                owed.append(operation)
        return owed

    def renew_many(self, operation_ids: Collection[int], owner: str,
                   until: datetime) -> set[int]:
        return self._held_by(operation_ids, owner, lease_until=until)

    def finish_many(self, operation_ids: Collection[int], owner: str) -> set[int]:
        return self._held_by(operation_ids, owner, state=OperationState.DONE.value,
                             lease_owner=None, lease_until=None, last_error=None)

    def _held_by(self, operation_ids: Collection[int], owner: str, **values: Any) -> set[int]:
        """Set ``values`` on those of ``operation_ids`` still pending under ``owner``'s lease
        (their rows stay locked until the transaction ends); their IDs."""
        if not operation_ids:
            return set()
        statement = (update(TABLE)
                     .where(among(self.session, TABLE.c.id, operation_ids),
                            TABLE.c.state == OperationState.PENDING.value,
                            TABLE.c.lease_owner == owner)
                     .values(**values).returning(TABLE.c.id))
        return {id_ for (id_,) in self._execute(statement)}



_OWED = select(TABLE).where(TABLE.c.request_id == bindparam("request_id"),
                            TABLE.c.kind == bindparam("kind"))
_SAVE = (update(TABLE).where(TABLE.c.id == bindparam("row_id"))
         .values({column: bindparam(f"new_{column}") for column in OPERATION.columns}))


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """An operation a worker may take at ``now``: still owed, due, and its lease lapsed."""
    return (TABLE.c.state == OperationState.PENDING.value,
            TABLE.c.next_attempt_at <= now,
            TABLE.c.lease_until.is_(None) | (TABLE.c.lease_until < now))
