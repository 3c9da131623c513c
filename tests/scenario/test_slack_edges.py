"""Slack at the edges, end to end over signed requests and the fake Slack: typed text never
becomes markup, huge numbers get a clear answer, forms open only for those who may use them,
and a form Slack will not open says what to type instead."""

from __future__ import annotations

from typing import Any

import pytest

from bot.app import SlackRuntime
from bot.domain.model import Actor, State
from bot.domain.ports import ExternalAccount
from bot.fakes.slack import FakeSlack
from bot.services import grants
from tests.conftest import ADMIN, ALICE, BOB, CAROL
from tests.fakes.ports import InMemoryGranter
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, selected, text_input, wait_for

HOSTILE = "db down <!channel> ask <@U0BOB000001> see <https://sso.evil.example|the SSO page>"
RAW = ("<!channel>", "<@U0BOB000001>", "<https://sso.evil.example")
SHOWN = "&lt;!channel&gt;"


def _mrkdwn(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str):
            found.append(value["text"])
        for item in value.values():
            _mrkdwn(item, found)
    elif isinstance(value, list):
        for item in value:
            _mrkdwn(item, found)


def everything_shown(slack: FakeSlack) -> list[str]:
    """Every mrkdwn text and message fallback the bot sent: messages, updates, ephemerals,
    answers to response URLs, views (a view's plain_text inputs are not markup)."""
    found: list[str] = []
    with slack._lock:
        calls = list(slack.calls)
        answers = list(slack.responses)
    for call in calls:
        if call.method.startswith("chat."):
            found.append(str(call.params.get("text") or ""))
        _mrkdwn(call.params, found)
    for answer in answers:
        found.append(str(answer.get("text") or ""))
        _mrkdwn(answer, found)
    return found


def assert_inert(slack: FakeSlack, expected: str = SHOWN) -> None:
    shown = everything_shown(slack)
    for text in shown:
        for raw in RAW:
            assert raw not in text, text
    assert any(expected in text for text in shown), "the typed text was not shown at all"


# --- no typed text becomes markup ---------------------------------------------------------


def test_reason_typed_in_the_command(driver: Driver, slack: FakeSlack) -> None:
    assert driver.ask(ALICE, f"request staging edit 1h {HOSTILE}")["text"].startswith(
        "Request #1 filed")
    wait_for(lambda: slack.channel_messages(APPROVALS_CHANNEL))
    assert_inert(slack)


def test_reason_typed_in_the_form(driver: Driver, slack: FakeSlack) -> None:
    driver.command(ALICE, "request staging edit 1h")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    accepted = driver.submit(ALICE, modal, {
        "cluster": selected("pick_cluster", "staging"), "role": selected("pick_role", "edit"),
        "duration": text_input("duration", "1h"), "reason": text_input("reason", HOSTILE)})
    assert accepted.body == ""
    wait_for(lambda: slack.channel_messages(APPROVALS_CHANNEL))
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "Request #1 filed" in m["text"]])
    assert_inert(slack)


def test_comment_and_deny_reason_typed_in_commands(driver: Driver, slack: FakeSlack,
                                                   runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request prod view 1h debugging")
    assert "Waiting for 1 more" in driver.ask(BOB, f"approve 1 {HOSTILE}")["text"]
    assert driver.ask(CAROL, f"deny 1 {HOSTILE}")["text"] == "You denied request #1."
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "was denied" in m["text"]])
    wait_for(lambda: len(slack.called("chat.update")) >= 2)
    assert_inert(slack)


def test_deny_reason_typed_in_the_form(driver: Driver, slack: FakeSlack) -> None:
    driver.ask(ALICE, "request staging edit 1h fix")
    driver.click(BOB, "deny", "1")
    modal = wait_for(lambda: [v for v in slack.views if v.get("callback_id") == "deny_modal"])[0]
    assert driver.submit(BOB, modal, {"reason": text_input("reason", HOSTILE)}).body == ""
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "was denied" in m["text"]])
    assert_inert(slack)


def test_revoke_and_extend_reasons_from_slack_and_the_cli(driver: Driver, slack: FakeSlack,
                                                          runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging edit 1h fix")
    driver.ask(BOB, "approve 1")
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
    assert "Extension #2" in driver.ask(ALICE, f"extend 1 1h {HOSTILE}")["text"]
    assert driver.ask(ALICE, f"revoke 1 {HOSTILE}")["text"] == "Request #1 is revoked."
    driver.ask(ALICE, "request staging view 1h")  # auto-approved: #3
    wait_for(lambda: grants.get(runtime.ctx, 3).state is State.ACTIVE)
    # What `grants revoke 3 --reason …` does, as the operator at the shell.
    grants.revoke_as(runtime.ctx, 3, Actor("cli:<!channel>", is_admin=True), HOSTILE)
    wait_for(lambda: len([m for m in slack.dms_to(ALICE) if "was revoked" in m["text"]]) == 2)
    assert_inert(slack)


def test_gitlab_username_typed_in_link(driver: Driver, slack: FakeSlack,
                                       granter: InMemoryGranter) -> None:
    assert "&lt;@U0BOB000001&gt;" in driver.ask(ALICE, "link gitlab <@U0BOB000001>")["text"]
    granter.accounts["<!channel>"] = ExternalAccount("<!channel>", None)
    answer = driver.ask(ALICE, "link gitlab <!channel>")["text"]
    assert "admin must confirm" in answer
    wait_for(lambda: slack.dms_to(ADMIN))
    assert_inert(slack)


def test_namespace_typed_in_the_command(driver: Driver, slack: FakeSlack) -> None:
    answer = driver.ask(ALICE, "request staging deploy 1h -n <!channel> x")["text"]
    assert "is not a namespace of staging/deploy" in answer
    assert_inert(slack)


@pytest.mark.parametrize("text", ["request staging deploy 1h -n kube-system",
                                  "request staging edit 1h -n shop"])
def test_a_namespace_the_role_lacks_is_refused_before_the_form(driver: Driver, slack: FakeSlack,
                                                               text: str) -> None:
    """Without a reason the form would open, and it offers only the role's namespaces: the
    one typed would be dropped unseen."""
    answer = driver.ask(ALICE, text)["text"]
    assert answer in ("'kube-system' is not a namespace of staging/deploy: choose one of shop, "
                      "payments.", "staging/edit is cluster-wide: leave the namespace out.")
    assert not slack.called("views.open")


# --- bounded numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "says"), [
    ("request staging view 99999999999999999999h x", "longer than any access should last"),
    ("request staging view 4000d x", "longer than any access should last"),
    ("extend 1 99999999999999999999h", "longer than any access should last"),
    ("approve 99999999999999999999999", "There is no request #99999999999999999999999."),
    ("deny 99999999999 no", "There is no request #99999999999."),
    ("cancel 2147483648", "There is no request #2147483648."),
    ("revoke #99999999999 done", "There is no request #99999999999."),
    ("extend 99999999999 1h", "There is no request #99999999999."),
])
def test_huge_numbers_get_a_clear_answer(driver: Driver, runtime: SlackRuntime, text: str,
                                         says: str) -> None:
    answer = driver.ask(ALICE, text)["text"]
    assert says in answer
    assert "went wrong" not in answer


def test_huge_durations_in_the_forms_show_on_the_field(driver: Driver, slack: FakeSlack,
                                                       runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    refused = driver.submit(ALICE, modal, {
        "cluster": selected("pick_cluster", "staging"), "role": selected("pick_role", "edit"),
        "duration": text_input("duration", "99999999999999999999h"),
        "reason": text_input("reason", "x")})
    assert refused.status == 200, refused.body
    assert '"response_action": "errors"' in refused.body
    assert "longer than any access should last" in refused.body
    driver.ask(ALICE, "request staging view 1h")  # auto-approved
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
    driver.click(ALICE, "extend", "1", channel=slack.dm_channel(ALICE))
    extend = wait_for(lambda: [v for v in slack.views if v.get("callback_id") == "extend_modal"])
    refused = driver.submit(ALICE, extend[0], {
        "duration": text_input("duration", "99999999999999999999h"),
        "reason": text_input("reason", "")})
    assert refused.status == 200, refused.body
    assert '"duration": "' in refused.body and "longer than any access" in refused.body
    assert len(grants.get(runtime.ctx, 1).approvals) == 1  # the policy's, nothing new


# --- forms refused at the click -----------------------------------------------------------


def test_deny_form_opens_only_for_those_who_may_deny(driver: Driver, slack: FakeSlack,
                                                     runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging edit 1h fix")
    for user, says in [(CAROL, "You are not an approver"),
                       (ALICE, "You cannot deny your own request #1"),
                       ("U0STRANGE", "You are not an approver")]:
        assert says in driver.press(user, "deny", "1")
    assert slack.called("views.open") == []
    driver.click(BOB, "deny", "1")
    opened = wait_for(lambda: slack.called("views.open"))
    assert [v["view"]["callback_id"] for v in opened] == ["deny_modal"]
    assert grants.get(runtime.ctx, 1).state is State.PENDING


def test_extend_form_opens_only_for_the_grantee(driver: Driver, slack: FakeSlack,
                                                runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging view 1h")
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
    for user in (BOB, CAROL, ADMIN):
        answer = driver.press(user, "extend", "1", channel=slack.dm_channel(user))
        assert answer == "Only the grantee can extend request #1."
        assert "staging" not in answer
    assert slack.called("views.open") == []
    driver.click(ALICE, "extend", "1", channel=slack.dm_channel(ALICE))
    opened = wait_for(lambda: slack.called("views.open"))
    assert [v["view"]["callback_id"] for v in opened] == ["extend_modal"]


# --- a form that cannot open --------------------------------------------------------------


@pytest.mark.parametrize("error", ["expired_trigger_id", "invalid_trigger_id",
                                   "exchanged_trigger_id", "view_too_large",
                                   "invalid_arguments"])
def test_a_form_that_cannot_open_says_what_to_type(driver: Driver, slack: FakeSlack,
                                                   runtime: SlackRuntime, error: str) -> None:
    slack.fail("views.open", error, times=1)
    answer = driver.ask(ALICE, "request staging deploy 2h")["text"]
    assert "went wrong" not in answer
    assert error in answer
    assert "`/k8s-access request staging deploy 2h REASON…`" in answer

    driver.ask(ALICE, "request staging view 1h")  # auto-approved: #1
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
    slack.fail("views.open", error, times=1)
    answer = driver.press(ALICE, "extend", "1", channel=slack.dm_channel(ALICE))
    assert "`/k8s-access extend 1 DURATION [REASON]`" in answer

    driver.ask(ALICE, "request staging edit 1h fix")  # #2, waits for Bob
    slack.fail("views.open", error, times=1)
    answer = driver.press(BOB, "deny", "2")
    assert "`/k8s-access deny 2 REASON`" in answer and "went wrong" not in answer
    assert grants.get(runtime.ctx, 2).state is State.PENDING
