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


@pytest.mark.parametrize(
    "text", ["4000d", "99999999999999999999h", "99999999999999999999w", "1w99999999999999999999m",
             "3651d", "1" + "0" * 5000 + "m", "0" * 30 + "5300000m"]
)
def test_out_of_range_numbers_get_the_same_clear_answer(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_duration(text)
    assert "longer than any access should last: write it like 90m" in error.value.message
    assert len(error.value.message) < 200  # a huge number is not echoed back whole


@pytest.mark.parametrize(("text", "expected"), [("3650d", timedelta(days=3650)),
                                                ("0000000000000000000001h", timedelta(hours=1))])
def test_the_longest_duration_and_leading_zeros_still_parse(text: str,
                                                            expected: timedelta) -> None:
    assert parse_duration(text) == expected
