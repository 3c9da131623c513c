from datetime import timedelta

import pytest

from bot.domain.durations import format_duration, parse_duration
from bot.domain.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("4h", timedelta(hours=4)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m", timedelta(weeks=1, days=2, hours=3, minutes=4)),
        (" 4H ", timedelta(hours=4)),
    ],
)
def test_parses_what_people_type(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "4", "h", "4x", "4 h", "-4h", "1.5h", "30m1h", "0m", "0h0m", "4hours", "1y",
             "99999w"]
)
def test_rejects_everything_else_saying_how_to_write_it(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_duration(text)
    assert "90m, 4h, 2d, 1w or 1h30m" in error.value.message


@pytest.mark.parametrize("text", ["90m", "1h30m", "2d", "1w1d", "8h"])
def test_format_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_format_is_shortest() -> None:
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=8)) == "1w1d"
    assert format_duration(timedelta(seconds=30)) == "0m"
