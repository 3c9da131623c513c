"""``column IN (…)`` for the batches: hundreds of IDs in one statement.

SQLAlchemy writes an IN list as one placeholder per value, and psycopg parses a statement's
placeholders in Python on every execution of one too long to cache: a batch of 500 grants paid
that for each of its statements. On PostgreSQL the IDs go as one array parameter instead
(``= ANY(…)``), a short statement parsed once; SQLite keeps the IN list.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Integer, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session


def among(session: Session, column: Any, ids: Collection[int]) -> ColumnElement[bool]:
    values = list(ids)
    if session.get_bind().dialect.name == "postgresql":
        condition: ColumnElement[bool] = column == any_(
            bindparam(None, values, type_=ARRAY(Integer)))
        return condition
    return column.in_(values)  # type: ignore[no-any-return]


def among_parameter(postgresql: bool, column: Any, name: str) -> ColumnElement[bool]:
    """:func:`among` for a statement built once: the IDs are given at execution, as the
    parameter ``name`` (a list): one array on PostgreSQL, an IN list SQLite expands."""
    if postgresql:
        condition: ColumnElement[bool] = column == any_(
            bindparam(name, type_=ARRAY(Integer)))
        return condition
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]
