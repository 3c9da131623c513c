"""Delivery is a fact: what the bot does when Slack answers with something other than ``ok``.

Every error here is one Slack documents for the method, produced by the local Slack the way a
workspace would (a channel the bot was never invited to, a deactivated approver, a message
over Block Kit's limits), and the bot is driven by signed requests like the other scenarios.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.adapters.metrics import PrometheusMetrics
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.services import access, reminders
from tests.conftest import ADMIN, ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, state_of, wait_for

H = timedelta(hours=1)


@pytest.fixture
def runtime(runtime: SlackRuntime) -> SlackRuntime:
    """The scenario runtime, its messages to one channel not spaced out."""
    runtime.ctx.notifier.per_channel_interval = 0  # type: ignore[attr-defined]
    return runtime


def undelivered(metrics: PrometheusMetrics, purpose: str, error: str, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "k8s_access_slack_undelivered_total",
        {"purpose": purpose, "error": error, "kind": kind})
    return value or 0.0


def approval_dms(slack: FakeSlack, user: str) -> list[tuple[str, dict[str, Any]]]:
    """``(ts, message)`` of the approval messages in ``user``'s DM."""
    channel = slack.dm_channel(user)
    with slack._lock:
        found = [(ts, m) for (c, ts), m in slack.messages.items() if c == channel]
    return [(ts, m) for ts, m in found
            if any(b["type"] == "actions" and b["elements"][0]["action_id"] == "approve"
                   for b in m["blocks"])]


def audit_actions(runtime: SlackRuntime, request_id: int) -> list[tuple[str, dict[str, Any]]]:
    with runtime.ctx.transaction() as uow:
        return [(e.action, e.details) for e in uow.audit.events()
                if e.request_id == request_id]


# --- the approvers channel the bot cannot post in (issue case 1) ------------------------

CHANNEL_FAULTS: dict[str, Callable[[FakeSlack], None]] = {
    # Never invited: the channel exists, the bot is not a member.
    "not_in_channel": lambda s: (s.channels.discard(APPROVALS_CHANNEL),
                                 s.outside.add(APPROVALS_CHANNEL)),
    # Deleted, or a typo in the configuration.
    "channel_not_found": lambda s: s.channels.discard(APPROVALS_CHANNEL),
    "is_archived": lambda s: s.archived.add(APPROVALS_CHANNEL),
}
WHY_CHANNEL = {
    "not_in_channel": f"the bot is not in <#{APPROVALS_CHANNEL}>",
    "channel_not_found": f"channel `{APPROVALS_CHANNEL}` does not exist",
    "is_archived": f"<#{APPROVALS_CHANNEL}> is archived",
}


@pytest.mark.parametrize("error", sorted(CHANNEL_FAULTS))
def test_an_approvers_channel_the_bot_cannot_post_in_falls_back_to_dms(
        error: str, driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
        metrics: PrometheusMetrics) -> None:
    CHANNEL_FAULTS[error](slack)
    answer = driver.ask(ALICE, "request staging edit 1h test")

    assert slack.errors("chat.postMessage")[:1] == [error]
    assert state_of(runtime, 1) is State.PENDING
    # Bob is named; Dave through the approvers' user group: both told by DM, with buttons.
    assert approval_dms(slack, BOB) and approval_dms(slack, DAVE)
    assert "Waiting for 1 approval from <@U0BOB0002>, <@U0DAVE004>, told by DM." \
        in answer["text"]
    assert WHY_CHANNEL[error] in answer["text"]
    assert undelivered(metrics, "approval", error, "recipient") == 1

    ts, _ = approval_dms(slack, BOB)[0]
    driver.click(BOB, "approve", "1", channel=slack.dm_channel(BOB), ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    for approver in (BOB, DAVE):  # every copy of the message shows the outcome
        wait_for(lambda a=approver: "Active until" in str(approval_dms(slack, a) or
                                                          slack.channel_messages(
                                                              slack.dm_channel(a))))


def test_the_requester_is_told_where_the_request_went(driver: Driver, slack: FakeSlack) -> None:
    answer = driver.ask(ALICE, "request staging edit 1h test")
    assert answer["text"].endswith(
        f"Waiting for 1 approval from the approvers in <#{APPROVALS_CHANNEL}>.")
    assert not approval_dms(slack, BOB)


@pytest.mark.parametrize(("channel_error", "dm_errors"), [
    ("not_in_channel", {BOB: "user_disabled", DAVE: "account_inactive"}),
    ("is_archived", {BOB: "cannot_dm_bot", DAVE: "user_not_found"}),
])
def test_nobody_reachable_is_told_to_the_requester_and_the_admins(
        channel_error: str, dm_errors: dict[str, str], driver: Driver, slack: FakeSlack,
        runtime: SlackRuntime) -> None:
    CHANNEL_FAULTS[channel_error](slack)
    for user, error in dm_errors.items():
        slack.fail("conversations.open", error, users=user)

    answer = driver.ask(ALICE, "request staging edit 1h test")

    assert "No approver could be reached: " in answer["text"]
    assert WHY_CHANNEL[channel_error] in answer["text"]
    assert "an admin has been told" in answer["text"]
    assert "Waiting for 1 approval." not in answer["text"]
    alert = [m for m in slack.dms_to(ADMIN) if "reached no approver" in m["text"]]
    assert len(alert) == 1 and WHY_CHANNEL[channel_error] in alert[0]["text"]
    truth = [m for m in slack.dms_to(ALICE) if "reached no approver" in m["text"]]
    assert len(truth) == 1 and "an admin has been told" in truth[0]["text"]
    assert ("approvers unreachable", {"undelivered": {APPROVALS_CHANNEL: channel_error,
                                                      **dm_errors}}) \
        in audit_actions(runtime, 1)
    assert state_of(runtime, 1) is State.PENDING


def test_nobody_reachable_and_no_admin_either(driver: Driver, slack: FakeSlack) -> None:
    CHANNEL_FAULTS["not_in_channel"](slack)
    for user in (BOB, DAVE, ADMIN):
        slack.fail("conversations.open", "user_disabled", users=user)
    answer = driver.ask(ALICE, "request staging edit 1h test")
    assert "no admin could be told either: tell the platform team yourself" in answer["text"]


def test_renotification_reaches_approvers_whose_first_notice_failed(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    CHANNEL_FAULTS["not_in_channel"](slack)
    for user in (BOB, DAVE):
        slack.fail("conversations.open", "user_disabled", users=user)
    driver.ask(ALICE, "request staging edit 1h test")
    assert not slack.channel_messages(APPROVALS_CHANNEL)

    clock.advance(4 * H)
    assert reminders.renotify_pending(runtime.ctx) == 0  # still nobody: logged, not counted
    clock.advance(timedelta(minutes=1))
    assert reminders.renotify_pending(runtime.ctx) == 0  # and not tried every minute

    slack.outside.discard(APPROVALS_CHANNEL)  # someone typed /invite
    slack.channels.add(APPROVALS_CHANNEL)
    clock.advance(8 * H)  # 12 h after filing: the second re-notification
    assert reminders.renotify_pending(runtime.ctx) == 1
    assert reminders.renotify_pending(runtime.ctx) == 0

    posted = [(ts, m) for (c, ts), m in slack.messages.items() if c == APPROVALS_CHANNEL]
    assert len(posted) == 1
    ts, message = posted[0]
    assert [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]] == ["approve", "deny"]
    driver.click(BOB, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    wait_for(lambda: "Active until" in str(slack.message(APPROVALS_CHANNEL, ts)))


def test_renotification_of_a_request_told_by_dm_replies_in_those_dms(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    CHANNEL_FAULTS["not_in_channel"](slack)
    driver.ask(ALICE, "request staging edit 1h test")
    clock.advance(4 * H)
    assert reminders.renotify_pending(runtime.ctx) == 1
    for approver in (BOB, DAVE):
        ts, _ = approval_dms(slack, approver)[0]
        replies = [m for m in slack.channel_messages(slack.dm_channel(approver))
                   if m.get("thread_ts") == ts]
        assert len(replies) == 1 and "has waited since" in replies[0]["text"]


# --- one approver that cannot be reached (issue case 2) ---------------------------------

@pytest.mark.parametrize(("method", "error"), [
    ("conversations.open", "user_disabled"),
    ("conversations.open", "account_inactive"),
    ("conversations.open", "user_not_found"),
    ("conversations.open", "cannot_dm_bot"),
    ("chat.postMessage", "messages_tab_disabled"),
])
def test_one_approver_who_cannot_be_reached_does_not_silence_the_others(
        method: str, error: str, driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
        metrics: PrometheusMetrics) -> None:
    # prod has no approvers channel: Bob, Carol and Dave are DMed, Bob first.
    if method == "conversations.open":
        slack.fail(method, error, users=BOB)
    else:
        slack.fail(method, error, channel=slack.dm_channel(BOB))

    answer = driver.ask(ALICE, "request prod view 1h look at logs")

    assert not approval_dms(slack, BOB)
    assert approval_dms(slack, CAROL) and approval_dms(slack, DAVE)
    assert "Waiting for 2 approvals from <@U0CAROL03>, <@U0DAVE004>, told by DM." \
        in answer["text"]
    assert f"Not reached: <@{BOB}>" in answer["text"]
    purpose = "approval_dm"
    assert undelivered(metrics, purpose, error, "recipient") == 1
    assert not slack.dms_to(ADMIN)  # somebody was reached: no alarm
    assert "approvers unreachable" not in [a for a, _ in audit_actions(runtime, 1)]


def test_a_requester_who_cannot_get_dms_does_not_stop_the_approval_message(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    slack.fail("conversations.open", "user_disabled", users=ALICE)
    driver.ask(ALICE, "request staging edit 1h test")
    ts = wait_for(lambda: [ts for (c, ts) in slack.messages if c == APPROVALS_CHANNEL])[0]
    slack.fail("chat.update", "edit_window_closed", channel=APPROVALS_CHANNEL)
    driver.click(BOB, "approve", "1", ts=ts)
    # Neither the update Slack refused nor Alice's missing DM stops the grant.
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert "edit_window_closed" in slack.errors("chat.update")


# --- the weekly pass and a message Slack refuses (issue case 5) -------------------------

REFUSALS = [
    # (purpose, method, error, kind)
    ("reminder", "chat.postMessage", "invalid_blocks", "invalid"),
    ("reminder", "chat.postMessage", "msg_too_long", "invalid"),
    ("reminder", "conversations.open", "user_disabled", "recipient"),
    ("reminder", "conversations.open", "account_inactive", "recipient"),
    ("review", "chat.postMessage", "invalid_blocks", "invalid"),
    ("review", "chat.postMessage", "not_in_channel", "recipient"),
    ("review", "chat.postMessage", "is_archived", "recipient"),
]


def arrange_refusal(slack: FakeSlack, purpose: str, method: str, error: str) -> str:
    """Make Slack refuse the weekly reminder (Alice's DM) or review (the channel)."""
    if purpose == "review":
        slack.fail(method, error, channel=APPROVALS_CHANNEL)
        return APPROVALS_CHANNEL
    if method == "conversations.open":
        slack.fail(method, error, users=ALICE)
    else:
        slack.fail(method, error, channel=slack.dm_channel(ALICE))
    return slack.dm_channel(ALICE)


def weekly_posts(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [p for p in slack.called("chat.postMessage") if p.get("channel") == channel
            and ("end within a week" in p["text"] or "Access review" in p["text"])]


@pytest.mark.parametrize(("purpose", "method", "error", "kind"), REFUSALS)
def test_a_weekly_message_slack_refuses_is_not_retried_unchanged(
        purpose: str, method: str, error: str, kind: str, slack: FakeSlack,
        runtime: SlackRuntime, clock: FakeClock, metrics: PrometheusMetrics,
        caplog: pytest.LogCaptureFixture) -> None:
    channel = arrange_refusal(slack, purpose, method, error)
    active = access.file_request(runtime.ctx, ALICE, "staging", "view", duration=H)
    assert active.state is State.ACTIVE  # auto-approved: ends within the week
    before = len(slack.calls)

    with caplog.at_level(logging.ERROR):
        assert reminders.weekly(runtime.ctx) == 1  # the other one of the two went out
    for _ in range(3):  # the next passes, a minute apart
        clock.advance(timedelta(minutes=1))
        assert reminders.weekly(runtime.ctx) == 0

    # A DM is one post addressed to Alice (Slack opens the DM for it): its refusal for her
    # (an error of conversations.open) or for the message ends the one attempt.
    tried = [c for c in slack.calls[before:]
             if c.method in ("chat.postMessage", "conversations.open")
             and c.params.get("channel", c.params.get("users")) in (channel, ALICE)]
    assert len(tried) == 1  # tried once, never again unchanged
    assert undelivered(metrics, purpose, error, kind) == 1
    assert any("is not tried again" in r.getMessage() and error in r.getMessage()
               for r in caplog.records)
    reports = [m for m in slack.dms_to(ADMIN) if f"refused it (`{error}`)" in m["text"]]
    assert len(reports) == (1 if kind == "invalid" else 0)  # only a change to the bot helps


def test_a_weekly_message_slack_could_not_take_yet_goes_out_on_the_next_pass(
        slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock,
        metrics: PrometheusMetrics) -> None:
    access.file_request(runtime.ctx, ALICE, "staging", "view", duration=H)
    # Slack is down for longer than the client's own retries.
    slack.fail("chat.postMessage", "service_unavailable", times=3,
               channel=slack.dm_channel(ALICE))
    assert reminders.weekly(runtime.ctx) == 1  # the review
    assert undelivered(metrics, "reminder", "service_unavailable", "temporary") == 1
    clock.advance(timedelta(minutes=1))
    assert reminders.weekly(runtime.ctx) == 1  # the reminder, now
    delivered = [m for m in slack.channel_messages(slack.dm_channel(ALICE))
                 if "end within a week" in (m["text"] or "")]
    assert len(delivered) == 1


def test_a_weekly_reminder_over_slacks_limits_is_sent_at_most_once(
        slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    # Enough grants that a reminder listing each with its button passes 50 blocks.
    first = access.file_request(runtime.ctx, ALICE, "staging", "view", duration=H)
    with runtime.ctx.transaction() as uow:
        template = uow.requests.get(first.id or 0)
        for _ in range(29):
            template.id, template.version = None, 0
            uow.requests.add(template)
    for _ in range(3):
        reminders.weekly(runtime.ctx)
        clock.advance(timedelta(minutes=1))
    assert len(weekly_posts(slack, slack.dm_channel(ALICE))) == 1


def test_a_kubeconfig_slack_would_not_share_is_announced_to_the_requester(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    slack.fail("files.completeUploadExternal", "restricted_action",
               channel_id=slack.dm_channel(ALICE))
    driver.ask(ALICE, "request staging edit 1h deploy")
    ts = wait_for(lambda: [ts for (c, ts) in slack.messages if c == APPROVALS_CHANNEL])[0]
    driver.click(BOB, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    told = wait_for(lambda: [m for m in slack.dms_to(ALICE)
                             if "could not be delivered" in m["text"]])
    assert "`restricted_action`" in told[0]["text"]
    assert "/k8s-access revoke 1" in told[0]["text"]


@pytest.mark.parametrize(("error", "times", "retried"), [
    ("service_unavailable", 3, True),  # Slack down for longer than the client's own retries
    ("messages_tab_disabled", None, False),
])
def test_the_nudge_before_the_end_is_retried_only_when_it_may_work(
        error: str, times: int | None, retried: bool, slack: FakeSlack, runtime: SlackRuntime,
        clock: FakeClock) -> None:
    access.file_request(runtime.ctx, ALICE, "staging", "view", duration=2 * H)
    slack.fail("chat.postMessage", error, times=times, channel=slack.dm_channel(ALICE))
    clock.advance(H + 5 * timedelta(minutes=1))
    assert reminders.nudge_expiring(runtime.ctx) == 0
    clock.advance(timedelta(minutes=1))
    assert reminders.nudge_expiring(runtime.ctx) == (1 if retried else 0)
    nudges = [p for p in slack.called("chat.postMessage")
              if p.get("channel") == slack.dm_channel(ALICE) and "ends" in p["text"]]
    assert len(nudges) == (4 if retried else 1)  # the outage: a call and the client's 2 retries


def test_the_extension_reply_names_where_it_went(driver: Driver, slack: FakeSlack,
                                                 runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request prod view 1h test")  # prod: no channel, two of three by DM
    driver.ask(BOB, "approve 1")
    driver.ask(CAROL, "approve 1")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    answer = driver.ask(ALICE, "extend 1 1h more time")["text"]
    assert answer.startswith("Extension #2 of grant #1: :hourglass: Waiting for 2 more approvals")
    assert answer.endswith("from <@U0BOB0002>, <@U0CAROL03>, <@U0DAVE004>, told by DM.")


def test_an_admin_slack_cannot_reach_does_not_break_a_gitlab_link(
        driver: Driver, slack: FakeSlack, granter: InMemoryGranter) -> None:
    from bot.domain.ports import ExternalAccount

    granter.accounts["al"] = ExternalAccount("al", None)
    slack.fail("conversations.open", "user_disabled", users=ADMIN)
    answer = driver.ask(ALICE, "link gitlab al")["text"]
    assert "an admin must confirm the link; no admin could be told: ask one" in answer
    assert "went wrong" not in answer


@pytest.mark.parametrize("error", ["missing_scope", "internal_error", "accesslimited"])
def test_an_admin_group_slack_cannot_list_does_not_stop_the_other_admins_hearing_of_a_link(
        error: str, settings: Settings, slack_config: Config, engine: Engine,
        granter: InMemoryGranter, clock: FakeClock, slack: FakeSlack) -> None:
    from bot.adapters.slack.handlers import Handlers
    from bot.config import parse_config
    from bot.domain.ports import ExternalAccount
    from tests.conftest import TEST_CONFIG

    admins_group = "S0ADMINS01"
    data = {**TEST_CONFIG, "admins": [admins_group, ADMIN]}
    runtime = build_slack_runtime(settings, parse_config(data, slack_config.source), http=True,
                                  engine=engine, granters={"staging": granter, "prod": granter},
                                  clock=clock)
    slack.usergroups[admins_group] = [CAROL]
    slack.fail("usergroups.users.list", error, usergroup=admins_group)
    granter.accounts["al"] = ExternalAccount("al", None)

    reply = Handlers(runtime.ctx, runtime.client).link(ALICE, "al")
    runtime.inbox.close()

    assert "an admin must confirm the link; the admins have been asked" in reply.text
    assert any("wants to be GitLab user `al`" in m["text"] for m in slack.dms_to(ADMIN))


@pytest.mark.parametrize("error", ["hash_conflict", "not_found", "internal_error"])
def test_a_form_slack_will_not_update_is_not_a_server_error(
        error: str, driver: Driver, slack: FakeSlack) -> None:
    import json
    from urllib.parse import urlencode

    from tests.scenario.conftest import selected

    driver.command(ALICE, "request")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    slack.fail("views.update", error)
    body = urlencode({"payload": json.dumps({
        "type": "block_actions", "user": {"id": ALICE}, "team": {"id": "T0TEAM"},
        "api_app_id": "A0APP", "trigger_id": "t",
        "view": {**modal, "id": "VMODAL", "hash": "h",
                 "state": {"values": {"cluster": selected("pick_cluster", "prod")}}},
        "container": {"type": "view", "view_id": "VMODAL"},
        "actions": [{"type": "static_select", "action_id": "pick_cluster", "block_id": "cluster",
                     "selected_option": {"value": "prod"}}]})})

    response = driver.dispatch(body)

    assert slack.errors("views.update") and response.status == 200


@pytest.mark.parametrize("error", ["missing_scope", "internal_error", "accesslimited"])
def test_an_approver_group_slack_cannot_list_grants_nothing_and_locks_nobody_out(
        error: str, driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    from tests.conftest import APPROVER_GROUP

    slack.fail("usergroups.users.list", error, usergroup=APPROVER_GROUP)

    filed = driver.ask(ALICE, "request staging edit 1h test")["text"]
    assert "Request #1 filed" in filed and "did not list" not in filed
    refused = driver.ask(DAVE, "approve 1")["text"]  # only in the group: not counted
    assert refused.startswith("You are not an approver for staging/edit")
    assert state_of(runtime, 1) is State.PENDING
    driver.ask(BOB, "approve 1")  # named on his own
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
