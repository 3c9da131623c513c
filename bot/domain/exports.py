"""CSV lines for files that people open in a spreadsheet: every CSV the bot writes is made of
:func:`csv_line`.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some, a tab
or a carriage return) as a formula: a reason, a name or a namespace someone typed could call
out or change what the reader sees (CSV injection, OWASP). Such a cell gets a ``'`` before
it, as spreadsheets themselves do (:func:`spreadsheet_safe`). A cell holding a separator, a
quote or a line break, carriage return included (which the ``csv`` module leaves unquoted
when lines end in ``\\n``), is quoted, so that no cell can start a row of its own.
"""

from __future__ import annotations

from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTED = (",", '"', "\n", "\r")


def spreadsheet_safe(value: object) -> object:
    """``value`` as a CSV cell no spreadsheet runs: a text starting like a formula gets a
    ``'`` before it; anything else is left as it is (numbers too, so a count stays one)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_line(values: Iterable[object]) -> str:
    """One CSV line (RFC 4180 quoting, ending in ``\\n``) of ``values``, each made
    :func:`spreadsheet_safe`; None is an empty cell."""
    return ",".join(_cell(spreadsheet_safe(value)) for value in values) + "\n"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    if any(mark in text for mark in _QUOTED):
        return '"' + text.replace('"', '""') + '"'
    return text
