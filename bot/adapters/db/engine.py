"""The database engine, set up for concurrent use on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

from bot.config import normalise_database_url


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
