"""Rows to domain records and back, declared once per record.

A :class:`Columns` names the attributes a record shares with its row; those stored otherwise
(an enum by its value, a duration in whole seconds, a JSON document copied so that neither side
shares it) say how they convert. Each store reads and writes its rows through its record's
columns, so a new column is one line beside its record's and one in ``models.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Generic, TypeVar

Record = TypeVar("Record")


@dataclass(frozen=True)
class Converted:
    """An attribute stored otherwise than the record holds it."""

    attribute: str
    column: str
    load: Callable[[Any], Any]
    store: Callable[[Any], Any]


def enum(attribute: str, kind: type[Enum]) -> Converted:
    """An enum, stored as its value."""
    return Converted(attribute, attribute, kind, lambda member: member.value)


def seconds(attribute: str, column: str) -> Converted:
    """A duration (None stays None), stored as whole seconds in ``column``."""
    return Converted(
        attribute, column,
        lambda stored: None if stored is None else timedelta(seconds=stored),
        lambda duration: None if duration is None else int(duration.total_seconds()))


def document(attribute: str, *, optional: bool = False) -> Converted:
    """A JSON document, copied both ways; an absent one reads as empty unless ``optional``."""
    def load(stored: Any) -> Any:
        return None if optional and stored is None else dict(stored or {})

    return Converted(attribute, attribute, load,
                     lambda value: None if value is None else dict(value))


class Columns(Generic[Record]):
    """How one kind of record is stored in its rows.

    ``columns`` are the attributes kept alike on both sides, by name, or :class:`Converted`;
    ``loaded_only`` those the database gives a record and a record never writes (its ID, the
    row version)."""

    def __init__(self, record: Callable[..., Record], *columns: str | Converted,
                 loaded_only: tuple[str, ...] = ()) -> None:
        self._record = record
        self._alike = tuple(c for c in columns if isinstance(c, str))
        self._converted = tuple(c for c in columns if isinstance(c, Converted))
        self._loaded_only = loaded_only

    @property
    def attributes(self) -> frozenset[str]:
        """The record's attributes its rows keep."""
        return frozenset((*self._alike, *self._loaded_only,
                          *(c.attribute for c in self._converted)))

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns :meth:`values` writes, by name."""
        return (*self._alike, *(c.column for c in self._converted))

    def load(self, row: Any, **more: Any) -> Record:
        """The record of ``row``; ``more`` gives what the row keeps elsewhere (related rows)."""
        values = {name: getattr(row, name) for name in (*self._alike, *self._loaded_only)}
        values.update((c.attribute, c.load(getattr(row, c.column))) for c in self._converted)
        return self._record(**values, **more)

    def values(self, record: Record) -> dict[str, Any]:
        """The columns ``record`` writes, by column name: for a new row or an INSERT."""
        values = {name: getattr(record, name) for name in self._alike}
        values.update((c.column, c.store(getattr(record, c.attribute))) for c in self._converted)
        return values

    def write(self, row: Any, record: Record) -> None:
        """Everything of ``record`` onto its existing ``row``."""
        for column, value in self.values(record).items():
            setattr(row, column, value)
