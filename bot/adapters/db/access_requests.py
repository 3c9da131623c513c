"""Access requests on SQLAlchemy.

Two writers never both win: every request row carries a version that each UPDATE compares and
bumps, and ``get(..., for_update=True)`` also takes the row lock on PostgreSQL so that
concurrent approvers queue instead of retrying.

Requests read by their IDs (what a decision or a grant's completion reads and saves, one at a
time or an expiry batch's hundreds) go through the record's column mapping as plain
statements: the rows and their approvals read (joined, or in a second SELECT once the rows are
locked), one UPDATE sent for all (and an INSERT for approvals added), instead of the ORM's
loading, identity map and flush, which cost more than the database did. Lists keep their ORM
rows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, Table, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from bot.adapters.db.among import among, among_parameter
from bot.adapters.db.mapping import Columns, document, enum, seconds
from bot.adapters.db.models import ONE_PENDING_INDEX, ApprovalRow, OperationRow, RequestRow
from bot.domain.errors import ConcurrentModification, NotFound
from bot.domain.model import (
    AccessRequest,
    Approval,
    Decision,
    Kind,
    OperationKind,
    State,
)

APPROVAL = Columns(Approval, "approver_id", enum("decision", Decision), "decided_at", "comment",
                   seconds("duration", "approved_seconds"))
REQUEST = Columns(
    AccessRequest,
    enum("kind", Kind), "parent_id", "requester_id", "cluster", "role", "namespace",
    seconds("duration", "duration_seconds"), "reason", "subject", enum("state", State),
    "break_glass", "approved_by_policy", "created_at", "decided_at", "activated_at", "ends_at",
    "ended_at", "ended_by", "end_reason", "last_error", "user_csr", document("backend_ref"),
    "grantee_id", "window_start", "escalations_applied", "renotified",
    loaded_only=("id", "version"),
)


def _to_request(row: RequestRow) -> AccessRequest:
    return REQUEST.load(row, approvals=[APPROVAL.load(a) for a in row.approvals])


def _write_request(row: RequestRow, request: AccessRequest) -> None:
    REQUEST.write(row, request)
    for approval in request.approvals[len(row.approvals):]:
        row.approvals.append(ApprovalRow(**APPROVAL.values(approval)))


TABLE: Table = RequestRow.__table__  # type: ignore[assignment]
APPROVALS: Table = ApprovalRow.__table__  # type: ignore[assignment]
_APPROVAL_COLUMNS = ("approver_id", "decision", "decided_at", "comment", "approved_seconds")
_ONE = (select(TABLE, *(APPROVALS.c[name].label(f"approval_{name}") for name in _APPROVAL_COLUMNS))
        .select_from(TABLE.outerjoin(APPROVALS, APPROVALS.c.request_id == TABLE.c.id))
        .where(TABLE.c.id == bindparam("request_id"))
        .order_by(APPROVALS.c.id))
"""A request and its approvals, oldest first: one row per approval (one with NULLs when it
has none)."""
_LOCKED = select(TABLE).where(TABLE.c.id == bindparam("request_id")).with_for_update()
"""A request, its row locked (PostgreSQL)."""
_APPROVALS_OF = (select(*(APPROVALS.c[name].label(f"approval_{name}")
                          for name in _APPROVAL_COLUMNS))
                 .where(APPROVALS.c.request_id == bindparam("request_id"))
                 .order_by(APPROVALS.c.id))
"""A request's approvals, oldest first, read after its row is locked: a statement that waited
for the lock sees the row as the transaction it waited for left it, but joined rows as they
were when it began, without the approval that transaction added."""
_SAVE_ONE = (update(TABLE)
             .where(TABLE.c.id == bindparam("row_id"), TABLE.c.version == bindparam("row_version"))
             .values({**{column: bindparam(f"new_{column}") for column in REQUEST.columns},
                      "version": TABLE.c.version + 1}))
"""Every column a request writes, its version compared and bumped."""


def _by_ids(postgresql: bool, locked: bool) -> Select[Any]:
    query = select(TABLE).where(among_parameter(postgresql, TABLE.c.id, "ids")) \
        .order_by(TABLE.c.id)
    return query.with_for_update() if locked else query


_MANY = {(postgresql, locked): _by_ids(postgresql, locked)
         for postgresql in (False, True) for locked in (False, True)}
"""Requests by their IDs (the parameter ``ids``), their rows locked (PostgreSQL) or not; by
(PostgreSQL?, locked?)."""
_APPROVALS_OF_MANY = {postgresql: (
    select(APPROVALS.c.request_id.label("approval_request_id"),
           *(APPROVALS.c[name].label(f"approval_{name}") for name in _APPROVAL_COLUMNS))
    .where(among_parameter(postgresql, APPROVALS.c.request_id, "ids"))
    .order_by(APPROVALS.c.id))
    for postgresql in (False, True)}
"""The approvals of requests by their IDs, oldest first (read after their rows are locked, as
:data:`_APPROVALS_OF`)."""


class _Approval:
    """An approval's columns in a joined row, by the names :data:`APPROVAL` reads."""

    __slots__ = ("_row",)

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, f"approval_{name}")


_EXPIRABLE = (
    RequestRow.state == State.ACTIVE.value,
    RequestRow.kind == Kind.ACCESS.value,
    ~exists().where(OperationRow.request_id == RequestRow.id,
                    OperationRow.kind == OperationKind.REVOKE.value),
)
"""Grants the expiry pass ends once their time is up: active access grants whose revocation
is not owed already (one that failed is the retry pass's)."""


def _changed(request: AccessRequest | None) -> ConcurrentModification:
    what = f"Request {request.label}" if request is not None else "A request"
    return ConcurrentModification(f"{what} was changed by someone else meanwhile; try again.")


class SqlAlchemyAccessRequests:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._read: dict[int, RequestRow] = {}
        """The rows read for writing, held: the session holds only weakly what is unchanged,
        and a row it forgot would be read again to be saved."""
        self._loaded: dict[int, int] = {}
        """Requests read by :meth:`get` or :meth:`get_many` in this transaction, by ID: how
        many approvals their rows have. Saved by :meth:`_save_loaded`."""

    def add(self, request: AccessRequest) -> AccessRequest:
        row = RequestRow()
        _write_request(row, request)
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as error:
            if ONE_PENDING_INDEX not in str(error.orig):
                raise
            # Someone filed the same for the same person a moment earlier: filing again
            # finds their request and says so.
            raise ConcurrentModification(
                f"Someone asked for {request.target} for the same person at the same moment; "
                "try again to see their request.") from None
        request.id = row.id
        request.version = row.version
        return request

    def _row(self, request_id: int, for_update: bool = False) -> RequestRow:
        query = select(RequestRow).where(RequestRow.id == request_id)
        row = self.session.scalars(_locked(query) if for_update else query).one_or_none()
        if row is None:
            raise NotFound(f"There is no request #{request_id}.")
        self._read[row.id] = row
        return row

    def get(self, request_id: int, *, for_update: bool = False) -> AccessRequest:
        """The request and its approvals, through the column mapping: one statement, or, to
        lock its row (PostgreSQL) when ``for_update``, one for the row and one for its
        approvals (:data:`_APPROVALS_OF`)."""
        connection, key = self.session.connection(), {"request_id": request_id}
        if for_update:
            row = connection.execute(_LOCKED, key).one_or_none()
            approved = connection.execute(_APPROVALS_OF, key).all() if row is not None else []
        else:
            approved = connection.execute(_ONE, key).all()
            row = approved[0] if approved else None
        if row is None:
            raise NotFound(f"There is no request #{request_id}.")
        approvals = [APPROVAL.load(_Approval(found)) for found in approved
                     if found.approval_approver_id is not None]
        request = REQUEST.load(row, approvals=approvals)
        self._loaded[request_id] = len(approvals)
        return request

    def save(self, request: AccessRequest) -> None:
        self.save_many([request])

    def save_many(self, requests: Sequence[AccessRequest]) -> None:
        loaded = [request for request in requests if (request.id or 0) in self._loaded]
        if loaded:
            self._save_loaded(loaded)
            requests = [request for request in requests if (request.id or 0) not in self._loaded]
            if not requests:
                return
        rows = []
        for request in requests:
            assert request.id is not None
            # Read in this same transaction, as a use case does: the session has it already.
            row = self._read.get(request.id) or self.session.get(RequestRow, request.id) \
                or self._row(request.id)
            if row.version != request.version:
                raise _changed(request)
            _write_request(row, request)
            rows.append(row)
        try:
            self.session.flush()
        except (StaleDataError, IntegrityError):
            raise _changed(requests[0] if len(requests) == 1 else None) from None
        for request, row in zip(requests, rows, strict=True):
            request.version = row.version

    def _save_loaded(self, requests: Sequence[AccessRequest]) -> None:
        """Save requests :meth:`get` or :meth:`get_many` read: one UPDATE of their columns,
        their versions compared and bumped, sent together; one INSERT of the approvals added
        since."""
        added = []
        for request in requests:
            assert request.id is not None
            added += [{**APPROVAL.values(approval), "request_id": request.id}
                      for approval in request.approvals[self._loaded[request.id]:]]
        connection = self.session.connection()
        parameters = [{**{f"new_{column}": value
                          for column, value in REQUEST.values(request).items()},
                       "row_id": request.id, "row_version": request.version}
                      for request in requests]
        try:
            result = connection.execute(_SAVE_ONE, parameters)
            if result.rowcount != len(parameters):
                raise _changed(requests[0] if len(requests) == 1 else None)
            if added:
                connection.execute(insert(APPROVALS), added)
        except IntegrityError:  # an approval by the same person, stored meanwhile
            raise _changed(requests[0] if len(requests) == 1 else None) from None
        for request in requests:
            assert request.id is not None
            request.version += 1
            self._loaded[request.id] = len(request.approvals)
            self._forget_row(request.id)

    def _forget_row(self, request_id: int) -> None:
        """The ORM's copy of a row written without it, if it holds one, dropped: a later read
        reads it again rather than the copy from before."""
        self._read.pop(request_id, None)
        held = self.session.identity_map.get(self.session.identity_key(RequestRow, request_id))
        if held is not None:
            self.session.expunge(held)

    def get_many(self, request_ids: Collection[int], *,
                 for_update: bool = False) -> list[AccessRequest]:
        """Requests by ID, in ID order, as :meth:`get` reads one (its rows locked on
        PostgreSQL when ``for_update``): one statement for the rows, one for their approvals;
        saved together as :meth:`get`'s are (:meth:`_save_loaded`)."""
        if not request_ids:
            return []
        postgresql = self.session.get_bind().dialect.name == "postgresql"
        requests = self._with_approvals(self.session.connection().execute(
            _MANY[postgresql, for_update], {"ids": list(request_ids)}).all())
        for request in requests:
            self._loaded[request.id or 0] = len(request.approvals)
        return requests

    def _with_approvals(self, rows: Sequence[Any]) -> list[AccessRequest]:
        """Requests from their rows (``select(TABLE)``), their approvals read in one statement
        (after the rows, as :data:`_APPROVALS_OF`)."""
        if not rows:
            return []
        postgresql = self.session.get_bind().dialect.name == "postgresql"
        approvals: dict[int, list[Approval]] = {}
        for found in self.session.connection().execute(_APPROVALS_OF_MANY[postgresql],
                                                       {"ids": [row.id for row in rows]}):
            approvals.setdefault(found.approval_request_id, []).append(
                APPROVAL.load(_Approval(found)))
        return [REQUEST.load(row, approvals=approvals.get(row.id, [])) for row in rows]

    def extensions_of(self, grant_ids: Collection[int],
                      states: Sequence[State]) -> list[AccessRequest]:
        query = select(RequestRow).where(among(self.session, RequestRow.parent_id, grant_ids),
                                         RequestRow.state.in_([s.value for s in states])) \
            .order_by(RequestRow.id)
        return self._held(query) if grant_ids else []

    def _held(self, query: Select[RequestRow]) -> list[AccessRequest]:
        rows = list(self.session.scalars(query))
        self._read.update((row.id, row) for row in rows)
        return [_to_request(row) for row in rows]

    def _all(self, query: Select[RequestRow]) -> list[AccessRequest]:
        return [_to_request(row) for row in self.session.scalars(query)]

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
        grantee: str | None = None,
        involving: str | None = None,
    ) -> list[AccessRequest]:
        query = select(RequestRow)
        if subject is not None:
            query = query.where(RequestRow.subject == subject)
        if grantee is not None:
            query = query.where(func.coalesce(RequestRow.grantee_id, RequestRow.requester_id)
                                == grantee)
        if involving is not None:
            query = query.where(or_(RequestRow.requester_id == involving,
                                    RequestRow.grantee_id == involving))
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
        return self._all(query)

    def due_to_expire(self, now: datetime, limit: int, *,
                      skip_locked: bool = False) -> list[AccessRequest]:
        """Through the column mapping, as :meth:`get_many` reads (hundreds at a time)."""
        query = (
            select(TABLE)
            .where(*_EXPIRABLE, TABLE.c.ends_at <= now)
            .order_by(TABLE.c.ends_at)
            .limit(limit)
        )
        if skip_locked:  # PostgreSQL; SQLite has one writer at a time (BEGIN IMMEDIATE)
            query = query.with_for_update(skip_locked=True, of=TABLE)
        return self._with_approvals(self.session.connection().execute(query).all())

    def next_to_expire(self) -> datetime | None:
        # ORDER BY … LIMIT 1 rather than min(): the (state, ends_at) index is read in order and
        # the scan stops at the first grant with no revocation owed (min() over the anti-join
        # would aggregate every active grant).
        return self.session.scalar(
            select(RequestRow.ends_at)
            .where(*_EXPIRABLE, RequestRow.ends_at.is_not(None))
            .order_by(RequestRow.ends_at)
            .limit(1)
        )

    def active_ending_before(self, until: datetime, limit: int) -> list[AccessRequest]:
        query = (
            select(RequestRow)
            .where(RequestRow.state == State.ACTIVE.value, RequestRow.ends_at < until,
                   RequestRow.kind == Kind.ACCESS.value)
            .order_by(RequestRow.ends_at)
            .limit(limit)
        )
        return self._all(query)

    def pending_created_before(self, before: datetime, limit: int) -> list[AccessRequest]:
        query = (
            select(RequestRow)
            .where(RequestRow.state == State.PENDING.value, RequestRow.created_at <= before)
            .order_by(RequestRow.created_at)
            .limit(limit)
        )
        return self._all(query)

    def pending_past(self, created_before: datetime, window_started_before: datetime,
                     limit: int) -> list[AccessRequest]:
        unscheduled = RequestRow.window_start.is_(None) & (RequestRow.created_at <= created_before)
        started = RequestRow.window_start <= window_started_before
        query = (
            select(RequestRow)
            .where(RequestRow.state == State.PENDING.value, unscheduled | started)
            .order_by(RequestRow.created_at)
            .limit(limit)
            # Replicas timing out at once each take the rows the others have not locked.
            .with_for_update(skip_locked=True, of=RequestRow)
        )
        return self._all(query)


def _locked(query: Select[RequestRow]) -> Select[RequestRow]:
    """``query`` taking the rows' locks (PostgreSQL), the rows read afresh."""
    return query.with_for_update().execution_options(populate_existing=True)


def count_by_state(engine: Engine) -> list[tuple[str, str, int]] | None:
    """``(state, cluster, count)`` of all requests; None when the database did not answer."""
    query = select(RequestRow.state, RequestRow.cluster, func.count()).group_by(
        RequestRow.state, RequestRow.cluster)
    try:
        with engine.connect() as connection:
            return [(state, cluster, count) for state, cluster, count in connection.execute(query)]
    except SQLAlchemyError:
        return None
