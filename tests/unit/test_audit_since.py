"""How far back `audit export --since` reads, and what it says about what it cannot read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.errors import InvalidInput
from bot.services.audit import parse_since

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "since"), [
    ("7d", NOW - timedelta(days=7)),
    ("3650d", NOW - timedelta(days=3650)),
    ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ("", None),
])
def test_since_reads_dates_and_durations_back_from_now(text: str,
                                                       since: datetime | None) -> None:
    assert parse_since(text, NOW) == since


@pytest.mark.parametrize("text", ["5000d", "1000w", "99999999999999999999d", "3651d1h"])
def test_a_duration_further_back_than_the_bot_reads_says_to_write_the_date(text: str) -> None:
    with pytest.raises(InvalidInput, match="goes back further than 3650 days, the longest "
                                           "duration the bot reads: write the date instead"):
        parse_since(text, NOW)


@pytest.mark.parametrize("text", ["yesterday-ish", "0d", "7x", "1.5h", "x" * 500])
def test_what_is_no_time_says_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not a time: write a date like 2026-11-01") as error:
        parse_since(text, NOW)
    assert len(error.value.message) < 200
