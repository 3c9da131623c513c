"""Parsing ``/k8s-access`` text: every number a person types is range-checked before use."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from bot.adapters.slack import commands
from bot.domain.errors import DomainError, InvalidInput, NotFound


@pytest.mark.parametrize("text", [
    "request staging view 99999999999999999999h x",
    "request staging view 1" + "0" * 5000 + "m x",
    "extend 1 99999999999999999999h",
    "extend 1 4000d more",
])
def test_huge_durations_are_refused_like_4000d(text: str) -> None:
    with pytest.raises(InvalidInput) as error:
        commands.parse(text)
    assert "longer than any access should last" in error.value.message


@pytest.mark.parametrize("verb", ["approve", "deny", "cancel", "revoke", "extend"])
@pytest.mark.parametrize("number", ["99999999999999999999999", "2147483648", "#99999999999",
                                    "0", "0" * 40])
def test_request_ids_out_of_range_name_no_request(verb: str, number: str) -> None:
    with pytest.raises(NotFound) as error:
        commands.parse(f"{verb} {number} 2h reason")
    assert error.value.message.startswith("There is no request #")


def test_a_request_id_too_long_to_show_is_cut_visibly() -> None:
    with pytest.raises(NotFound) as error:
        commands.parse("approve " + "9" * 30)
    assert error.value.message == f"There is no request #{'9' * 23}…."


@pytest.mark.parametrize(("text", "request_id"), [("approve 2147483647", 2**31 - 1),
                                                  ("deny #42 no", 42), ("cancel 007", 7)])
def test_request_ids_in_range(text: str, request_id: int) -> None:
    assert commands.parse(text).request_id == request_id


@pytest.mark.parametrize("text", ["approve abc", "approve 4x", "approve -1", "approve ٣"])
def test_what_is_not_a_number_is_not_a_request_id(text: str) -> None:
    with pytest.raises(DomainError) as error:
        commands.parse(text)
    assert "is not a request ID" in error.value.message


def test_extend_still_parses() -> None:
    parsed = commands.parse("extend 3 1h30m slow rollout")
    assert (parsed.request_id, parsed.duration, parsed.text) == (
        3, timedelta(minutes=90), "slow rollout")


@pytest.mark.parametrize(("text", "at", "reason"), [
    ("request prod edit 2h --at 2026-12-02T22:00 migrate db", "2026-12-02T22:00", "migrate db"),
    ("request prod edit 2h --at 22:00 migrate db", "22:00", "migrate db"),
    ("request prod edit 2h --at tomorrow 22:00 migrate db", "tomorrow 22:00", "migrate db"),
    ("request prod edit 2h --at Tomorrow 22:00Z migrate", "Tomorrow 22:00Z", "migrate"),
    ("request prod edit 2h --at 2026-12-02 22:00 migrate", "2026-12-02 22:00", "migrate"),
    ("request --at 22:00 prod edit 2h migrate", "22:00", "migrate"),   # anywhere after request
    ("request prod edit 2h migrate the db --at=22:00+01:00", "22:00+01:00", "migrate the db"),
    ("request prod edit 2h --at=tomorrow 07:00 x", "tomorrow 07:00", "x"),
    ("request prod edit 2h migrate", None, "migrate"),
])
def test_at_is_read_anywhere_after_request(text: str, at: str | None, reason: str) -> None:
    command = commands.parse(text)
    assert (command.cluster, command.role, command.at, command.text) == (
        "prod", "edit", at, reason)


@pytest.mark.parametrize(("text", "says"), [
    ("request prod edit 2h --at", "`--at` needs a start, like `--at 22:00`"),
    ("request prod edit 2h --at -n shop", "`--at` needs a start"),
    ("request prod edit 2h --at tomorrow", "`--at tomorrow` needs a time of day too"),
    ("request prod edit 2h --at 2026-12-02", "`--at 2026-12-02` needs a time of day too"),
])
def test_at_without_a_time_says_how_to_write_it(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(says)):
        commands.parse(text)


@pytest.mark.parametrize(("text", "option"), [
    ("request staging deploy 1h -n shop -n payments fix", "--namespace"),
    ("request staging deploy 1h -n shop fix --namespace=payments", "--namespace"),
    ("request --for <@U0BOB0002> staging view 1h --for=<@U0CAROL03> x", "--for"),
    ("request staging view 1h --at 22:00 --at=23:00 x", "--at"),
    ("approve 3 --for 2h --for 30m", "--for"),
])
def test_an_option_given_twice_is_refused_not_guessed(text: str, option: str) -> None:
    with pytest.raises(InvalidInput, match=f"`{re.escape(option)}` is given twice: give it once"):
        commands.parse(text)


def test_a_flag_given_twice_is_refused_too() -> None:
    with pytest.raises(InvalidInput, match="`--break-glass` is given twice"):
        commands.parse("request staging view 1h x --break-glass --break-glass")
