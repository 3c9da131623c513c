"""The operation queue on SQLAlchemy: one row per request and kind makes a backend call owed
once; a lease, taken and renewed by conditional UPDATEs, lets one worker hold it at a time.

Operations are read and written as plain statements on the transaction's connection, through
the record's column mapping: no ORM row of an operation is ever held, so none can be stale."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.adapters.db.among import among_parameter
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

    def next_due(self, now: datetime) -> datetime | None:
        # ORDER BY … LIMIT 1 on the (state, next_attempt_at) index: the scan stops at the
        # first operation no live lease holds.
        query = (
            select(TABLE.c.next_attempt_at)
            .where(*_unheld(now))
            .order_by(TABLE.c.next_attempt_at)
            .limit(1)
        )
        found: datetime | None = self.session.execute(query).scalar()
        return found

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
            statement: Any = _ENQUEUE_SHARED
            parameters: Any = {**{f"shared_{column}": value for column, value in shared.items()},
                               "request_ids": [row["request_id"] for row in rows]}
        else:
            statement = _ENQUEUE_PG if insert is pg_insert else _ENQUEUE_SQLITE
            parameters = rows
        made = {(request_id, kind): id_ for id_, request_id, kind
                in self._execute(statement, parameters)}
        owed = []
        for operation in operations:
            operation.id = made.get((operation.request_id, operation.kind.value))
            if operation.id is not None:
                owed.append(operation)
        return owed

    def renew_many(self, operation_ids: Collection[int], owner: str,
                   until: datetime) -> set[int]:
        return self._held_by(_RENEW, operation_ids, owner, {"until": until})

    def finish_many(self, operation_ids: Collection[int], owner: str) -> set[int]:
        return self._held_by(_FINISH, operation_ids, owner)

    def _held_by(self, statements: dict[bool, Any], operation_ids: Collection[int], owner: str,
                 parameters: dict[str, Any] | None = None) -> set[int]:
        """Run one of ``statements`` (:func:`_held`) on those of ``operation_ids`` still pending
        under ``owner``'s lease (their rows stay locked until the transaction ends); their
        IDs."""
        if not operation_ids:
            return set()
        connection = self.session.connection()
        statement = statements[connection.dialect.name == "postgresql"]
        return {id_ for (id_,) in connection.execute(
            statement, {**(parameters or {}), "ids": list(operation_ids), "owner": owner})}



_OWED = select(TABLE).where(TABLE.c.request_id == bindparam("request_id"),
                            TABLE.c.kind == bindparam("kind"))
_SAVE = (update(TABLE).where(TABLE.c.id == bindparam("row_id"))
         .values({column: bindparam(f"new_{column}") for column in OPERATION.columns}))


def _held(values: dict[str, Any]) -> dict[bool, Any]:
    """An UPDATE setting ``values`` on the operations (parameter ``ids``) still pending under
    one lease (parameter ``owner``), returning their IDs; built once for each kind of
    database (keyed by whether it is PostgreSQL)."""
    return {postgresql: (update(TABLE)
                         .where(among_parameter(postgresql, TABLE.c.id, "ids"),
                                TABLE.c.state == OperationState.PENDING.value,
                                TABLE.c.lease_owner == bindparam("owner"))
                         .values(**values).returning(TABLE.c.id))
            for postgresql in (False, True)}


def _owing(statement: Any) -> Any:
    """``statement`` (an INSERT of operations) leaving alone what is owed already, and
    returning the IDs, requests and kinds of the operations it made."""
    return (statement.on_conflict_do_nothing(index_elements=["request_id", "kind"])
            .returning(TABLE.c.id, TABLE.c.request_id, TABLE.c.kind))


_SHARED = tuple(column for column in OPERATION.columns if column != "request_id")
_ENQUEUE_SHARED = _owing(pg_insert(TABLE).from_select(["request_id", *_SHARED], select(
    func.unnest(bindparam("request_ids", type_=ARRAY(Integer))),
    *(bindparam(f"shared_{column}", type_=TABLE.c[column].type) for column in _SHARED))))
"""Operations alike but for their requests (PostgreSQL): the request IDs as one array
(parameter ``request_ids``), every other column once (``shared_<column>``)."""
_ENQUEUE_PG = _owing(pg_insert(TABLE))
_ENQUEUE_SQLITE = _owing(sqlite_insert(TABLE))

_RENEW = _held({"lease_until": bindparam("until")})
_FINISH = _held({"state": OperationState.DONE.value, "lease_owner": None, "lease_until": None,
                 "last_error": None})


def _unheld(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """An operation still owed that no live lease holds at ``now``."""
    return (TABLE.c.state == OperationState.PENDING.value,
            TABLE.c.lease_until.is_(None) | (TABLE.c.lease_until < now))


def _claimable(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """An operation a worker may take at ``now``: still owed, due, and its lease lapsed."""
    return (*_unheld(now), TABLE.c.next_attempt_at <= now)
