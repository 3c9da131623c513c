"""The inbox of received requests, kept in the database until a worker has done what each asks.

Receiving is one statement on the acknowledgement path: it claims the request's key (a replay
finds it taken, on any replica) and keeps the body. A worker claims what is waiting with a
lease, runs it and marks it done (in the use case's last transaction where there is one,
:meth:`SqlAlchemyInbox.done_in`); a worker that dies leaves its lease to run out, and the next
one takes the request again. Done rows keep their key, without the body, for as long as a
replay must still be refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    create_engine,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.adapters.db.models import SlackInboxRow
from bot.adapters.db.reachability import unavailable, unreachable
from bot.adapters.db.unit_of_work import SqlAlchemyUnitOfWork
from bot.domain.ports import UnitOfWork

log = logging.getLogger(__name__)
TABLE: Table = SlackInboxRow.__table__  # type: ignore[assignment]


_WAITING = (select(TABLE.c.key)
            .where(TABLE.c.done_at.is_(None),
                   or_(TABLE.c.lease_until.is_(None), TABLE.c.lease_until < bindparam("now")))
            .order_by(TABLE.c.received_at).limit(bindparam("limit"))
            .with_for_update(skip_locked=True))
_CLAIM = (update(TABLE).where(TABLE.c.key.in_(_WAITING.scalar_subquery()))
          .values(attempts=TABLE.c.attempts + 1, lease_until=bindparam("until"))
          .returning(TABLE.c.key, TABLE.c.body, TABLE.c.attempts, TABLE.c.received_at))
"""Lease the oldest waiting requests (parameters ``now``, ``until``, ``limit``): built once."""
_DONE = (update(TABLE).where(TABLE.c.key == bindparam("done_key"))
         .values(done_at=bindparam("now"), body=None, lease_until=None))
"""Mark a request done (parameters ``done_key``, ``now``): its body dropped, its key kept."""


@dataclass(frozen=True)
class InboxEntry:
    key: str
    body: str
    attempts: int
    """How many times it was claimed, this time included."""


class SqlAlchemyInbox:
    """``lease``: how long a claimed request is a worker's before another may take it;
    ``keep_done``: how long a done request's key stays to refuse a replay of it."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime], *, lease: timedelta,
                 keep_done: timedelta) -> None:
        self._engine = engine
        self._clock = clock
        self._lease = lease
        self._keep_done = keep_done
        self._on_receive: Callable[[], None] = lambda: None
        postgres = engine.dialect.name == "postgresql"
        insert: Any = pg_insert if postgres else sqlite_insert
        self._receive = (insert(TABLE)
                         .values(key=bindparam("key"), received_at=bindparam("received_at"),
                                 body=bindparam("body"), attempts=0,
                                 done_at=bindparam("done_at"))
                         .on_conflict_do_nothing(index_elements=["key"])
                         .returning(TABLE.c.key))
        self._receiver = engine
        self._keep: Callable[[dict[str, Any]], bool] = self._keep_through_core
        if postgres and engine.dialect.driver == "psycopg":
            # The acknowledgement path: one prepared statement on the driver, in autocommit, no
            # BEGIN, COMMIT or pre-ping: half the CPU of going through the ORM's engine. A
            # dropped connection is retried once instead of being pinged before every use.
            self._receiver = create_engine(engine.url, isolation_level="AUTOCOMMIT",
                                           pool_size=8, max_overflow=8,
                                           pool_reset_on_return=None)
            compiled = self._receive.compile(dialect=self._receiver.dialect)
            self._receive_sql, self._receive_defaults = str(compiled), dict(compiled.params)
            self._keep = self._keep_through_driver

    def notify(self, on_receive: Callable[[], None]) -> None:
        """Call ``on_receive`` after each request is kept: it wakes the worker."""
        self._on_receive = on_receive

    def receive(self, key: str, body: str) -> bool:
        """Keep a request's body under ``key``; False when the key was taken (a replay)."""
        fresh = self._kept({"key": key, "received_at": self._clock(), "body": body,
                            "done_at": None})
        if fresh:
            self._on_receive()
        return fresh

    def remember(self, key: str) -> bool:
        """Keep only ``key``, already done, for a request answered on receipt: no worker runs
        it, and a replay of it is refused like any other's. False when the key was taken."""
        now = self._clock()
        return self._kept({"key": key, "received_at": now, "body": None, "done_at": now})

    def _kept(self, values: dict[str, Any]) -> bool:
        """:meth:`_keep`; :class:`~bot.domain.errors.DatabaseUnavailable` when the database
        cannot be reached."""
        try:
            return self._keep(values)
        except Exception as error:
            if unreachable(error):
                raise unavailable(error) from error
            raise

    def _keep_through_core(self, values: dict[str, Any]) -> bool:
        with self._engine.begin() as connection:
            return connection.execute(self._receive, values).first() is not None

    def _keep_through_driver(self, values: dict[str, Any]) -> bool:
        try:
            return self._execute_on_driver(values)
        except psycopg.OperationalError:
            # The server went away (a restart, a failover): every pooled connection is as dead
            # as this one. Start a fresh pool and try once more.
            self._receiver.dispose()
            return self._execute_on_driver(values)

    def _execute_on_driver(self, values: dict[str, Any]) -> bool:
        connection = self._receiver.raw_connection()
        try:
            driver: psycopg.Connection[Any] = connection.driver_connection  # type: ignore[assignment]
            return driver.execute(self._receive_sql, {**self._receive_defaults, **values},
                                  prepare=True).fetchone() is not None
        except psycopg.OperationalError:
            connection.invalidate()
            raise
        finally:
            connection.close()

    def claim(self, worker: str, limit: int) -> list[InboxEntry]:
        """Up to ``limit`` waiting requests, oldest first, leased to ``worker``."""
        now = self._clock()
        with self._engine.begin() as connection:
            rows = connection.execute(_CLAIM, {"now": now, "until": now + self._lease,
                                               "limit": limit}).all()
        if rows:
            log.debug("%s claimed %s requests from the inbox", worker, len(rows))
        return [InboxEntry(key, body or "", attempts)
                for key, body, attempts, _ in sorted(rows, key=lambda row: row[3])]

    def done(self, key: str) -> None:
        """Finished (or given up): drop the body, keep the key for ``keep_done``."""
        with self._engine.begin() as connection:
            connection.execute(_DONE, {"done_key": key, "now": self._clock()})

    def done_in(self, uow: UnitOfWork, key: str) -> None:
        """:meth:`done`, inside ``uow``'s transaction (a unit of work on this database): a
        plain statement on its connection."""
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        uow.session.connection().execute(_DONE, {"done_key": key, "now": self._clock()})

    def waiting(self) -> int:
        with self._engine.connect() as connection:
            return int(connection.execute(
                select(func.count()).where(TABLE.c.done_at.is_(None))).scalar_one())

    def forget(self) -> int:
        """Delete the done requests received more than ``keep_done`` ago; how many."""
        before = self._clock() - self._keep_done
        with self._engine.begin() as connection:
            result = connection.execute(delete(TABLE).where(
                TABLE.c.done_at.is_not(None), TABLE.c.received_at < before))
        return int(getattr(result, "rowcount", 0) or 0)

    def close(self) -> None:
        if self._receiver is not self._engine:
            self._receiver.dispose()
