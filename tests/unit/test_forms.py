"""Opening a form: whatever keeps Slack from showing it, the person is told what to type
instead, never "something went wrong"."""

from __future__ import annotations

import urllib.error
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.adapters.slack.forms import open_form
from bot.domain.errors import InvalidInput


class Unanswered(WebClient):
    """A client whose views.open never gets Slack's answer (after its own retries)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(token="xoxb-test")
        self.error = error

    def views_open(self, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("error", [
    TimeoutError("timed out"),
    urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
    ConnectionResetError(104, "Connection reset by peer")])
def test_a_form_slack_did_not_answer_for_says_what_to_type(error: Exception) -> None:
    with pytest.raises(InvalidInput) as refused:
        open_form(Unanswered(error), "trigger-1", {"type": "modal"},
                  instead="`/k8s-access deny 2 REASON`")
    assert "`/k8s-access deny 2 REASON`" in refused.value.message
    assert "Slack did not answer" in refused.value.message
