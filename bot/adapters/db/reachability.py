"""Telling a database that cannot be reached from one that refuses a statement: the first is
:class:`~bot.domain.errors.DatabaseUnavailable` for whoever waits (try again in a minute), the
second stays the error it is."""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.domain.errors import DatabaseUnavailable

_SERVER_GONE = ("08", "57P")
"""SQLSTATE classes of a connection lost or refused, and of a server shutting down."""


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached now: a closed port, a server
    restarting or shutting down, the pool waiting in vain, a SQLite file that cannot be
    opened or is locked. A deadlock or a constraint is not."""
    if isinstance(error, PoolTimeout):
        return True
    cause: BaseException | None = error
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        cause = error.orig
    if isinstance(cause, sqlite3.OperationalError):
        return True
    if isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError):
        return cause.sqlstate is None or cause.sqlstate.startswith(_SERVER_GONE)
    return False


def unavailable(error: BaseException) -> DatabaseUnavailable:
    """The :class:`DatabaseUnavailable` to raise from ``error`` (:func:`unreachable`)."""
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DatabaseUnavailable(first)
