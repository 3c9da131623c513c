"""Parsing ``/k8s-access`` text: every number a person types is range-checked before use."""

from __future__ import annotations

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
