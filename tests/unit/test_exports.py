"""CSV lines that no spreadsheet runs as formulas and no cell can split into rows."""

from __future__ import annotations

import csv
import io

import pytest

from bot.domain.exports import csv_line, spreadsheet_safe


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("alice", "alice"), ("a=b", "a=b"), ("", ""),
    (-1, -1), (7, 7), (None, None),
])
def test_a_cell_that_starts_like_a_formula_is_text(value: object, cell: object) -> None:
    assert spreadsheet_safe(value) == cell


@pytest.mark.parametrize("typed", ["plain", "a,b", 'say "hi"', "two\nlines", "carriage\rreturn",
                                   "=HYPERLINK(\"https://evil.example\",\"x\")", "-2+3"])
def test_each_cell_reads_back_as_one_cell_of_one_row(typed: str) -> None:
    text = csv_line(["id", "value", "after"]) + csv_line([7, typed, None])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["id", "value", "after"], ["7", str(spreadsheet_safe(typed)), ""]]


def test_a_header_line_is_as_plain_as_before() -> None:
    assert csv_line(["id", "at", "actor"]) == "id,at,actor\n"
