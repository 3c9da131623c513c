"""Slack not answering while a person waits: a form that cannot open says what to type
instead, and admins who cannot be asked about a link are said to be so, never "something went
wrong"."""

from __future__ import annotations

import urllib.error
from types import SimpleNamespace

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.adapters.slack.forms import open_form
from bot.adapters.slack.handlers import Handlers
from bot.domain.errors import InvalidInput
from tests.fakes.clients import Failing


@pytest.mark.parametrize("error", [
    TimeoutError("timed out"),
    urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
    ConnectionResetError(104, "Connection reset by peer")])
def test_a_form_slack_did_not_answer_for_says_what_to_type(error: Exception) -> None:
    with pytest.raises(InvalidInput) as refused:
        open_form(Failing(error, "views_open"), "trigger-1", {"type": "modal"},
                  instead="`/k8s-access deny 2 REASON`")
    assert "`/k8s-access deny 2 REASON`" in refused.value.message
    assert "Slack did not answer" in refused.value.message


@pytest.mark.parametrize("error", [
    TimeoutError("timed out"), ConnectionResetError(104, "Connection reset by peer"),
    SlackApiError("refused", SlackResponse(
        client=None, http_verb="POST", api_url="https://slack.com/api/conversations.open",
        req_args={}, data={"ok": False, "error": "user_disabled"}, headers={},
        status_code=200))])
def test_admins_slack_cannot_reach_about_a_link_leave_the_link_asked_for(
        error: Exception) -> None:
    """The link is recorded before the admins are asked: an admin Slack cannot reach (or
    that does not answer) is told as such, never as "nothing was changed"."""
    handlers = Handlers(SimpleNamespace(admins=lambda: {"U0ADMIN05", "U0ADMIN06"}),  # type: ignore[arg-type]
                        Failing(error, "conversations_open"))
    assert handlers._ask_admins("U0ALICE01", "alice") == "no admin could be told: ask one"
