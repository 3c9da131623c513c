"""Who is who in Slack when Slack does not answer: a timeout or a dropped connection (after the
client's own retries) is a failure that may pass, like Slack's 5xx, never a crash that stops
an escalation pass or a weekly review midway."""

from __future__ import annotations

import urllib.error

import pytest

from bot.adapters.slack.directory import SlackDirectory
from bot.domain.errors import TemporaryBackendError
from tests.fakes.clients import Failing

NO_ANSWER = [TimeoutError("timed out"),
             urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
             ConnectionResetError(104, "Connection reset by peer")]


@pytest.mark.parametrize("error", NO_ANSWER)
def test_a_group_slack_did_not_list_is_unlisted_and_the_others_are_kept(
        error: Exception) -> None:
    directory = SlackDirectory(Failing(error, "usergroups_users_list"))
    people = directory.users(["U0BOB0002", "S0SRE0001"])
    assert people.users == {"U0BOB0002"} and people.unlisted == ("S0SRE0001",)
    assert directory.groups_of("U0BOB0002", frozenset({"S0SRE0001"})) == frozenset()


@pytest.mark.parametrize("error", NO_ANSWER)
def test_a_user_slack_did_not_describe_is_a_temporary_failure(error: Exception) -> None:
    with pytest.raises(TemporaryBackendError, match="Slack did not say who U0BOB0002 is"):
        SlackDirectory(Failing(error, "users_info")).user_info("U0BOB0002")
