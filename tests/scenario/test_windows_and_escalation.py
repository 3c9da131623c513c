"""Scheduled windows, escalation and re-notification back-off through Slack: signed commands,
clicks and form submissions into the real app, the local Slack answering, the job passes run
as the scheduler runs them (:data:`bot.jobs.JOBS`), the clock moved by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.app import SlackRuntime
from bot.config import Config, parse_config
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.jobs import JOBS
from bot.services import grants
from tests.conftest import ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter
from tests.scenario.conftest import (
    APPROVALS_CHANNEL,
    Driver,
    approval_message,
    scenario_data,
    selected,
    state_of,
    text_input,
    wait_for,
)

H, M = timedelta(hours=1), timedelta(minutes=1)
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # the FakeClock's start: Monday 10:00 in Berlin
TUESDAY_22_BERLIN = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)


@pytest.fixture
def slack_config(config: Config) -> Config:
    """The scenario configuration, with staging's approvals escalated to Carol after 30 min
    and windows at most three days ahead."""
    data = scenario_data()
    data["clusters"]["staging"].update(max_schedule_ahead="3d",
                                       escalation=[{"after": "30m", "approvers": [CAROL]}])
    return parse_config(data, config.source)


@pytest.fixture(autouse=True)
def alice_in_berlin(slack: FakeSlack) -> None:
    slack.users[ALICE]["tz"] = "Europe/Berlin"


def run(runtime: SlackRuntime, job: str) -> int:
    return JOBS[job](runtime.ctx)


def approval_ts(slack: FakeSlack) -> str:
    return approval_message(slack)[0]


def dm_texts(slack: FakeSlack, user: str) -> list[str]:
    return [str(m["text"]) for m in slack.dms_to(user)]


def dm_saying(slack: FakeSlack, user: str, words: str) -> str:
    found: list[str] = wait_for(lambda: [t for t in dm_texts(slack, user) if words in t])
    return found[0]


def actions_of(runtime: SlackRuntime, request_id: int) -> list[str]:
    with runtime.ctx.transaction() as uow:
        return [e.action for e in uow.audit.events() if e.request_id == request_id]


def buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


# --- scheduled windows --------------------------------------------------------------------


def test_a_window_is_approved_ahead_and_starts_on_time(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, granter: InMemoryGranter,
        clock: FakeClock) -> None:
    answer = driver.ask(ALICE, "request staging edit 2h --at tomorrow 22:00 migrate the db")
    assert "Request #1 filed" in answer["text"]
    assert ("Window: 2026-12-01 21:00 UTC (22:00 CET) to 2026-12-01 23:00 UTC "
            "(2026-12-02 00:00 CET).") in answer["text"]
    request = grants.get(runtime.ctx, 1)
    assert (request.window_start, request.reason) == (TUESDAY_22_BERLIN, "migrate the db")

    ts = approval_ts(slack)
    message = slack.message(APPROVALS_CHANNEL, ts)
    assert "*Window*" in str(message["blocks"])
    assert f"<!date^{int(TUESDAY_22_BERLIN.timestamp())}^" in str(message["blocks"])
    assert buttons(message) == ["approve", "deny"]

    assert "You approved request #1" in driver.press(BOB, "approve", "1", ts=ts)
    assert state_of(runtime, 1) is State.APPROVED
    starts = dm_saying(slack, ALICE, "was approved: your access starts at")
    assert f"<!date^{int(TUESDAY_22_BERLIN.timestamp())}^" in starts
    wait_for(lambda: "access starts" in str(slack.message(APPROVALS_CHANNEL, ts)["blocks"]))
    assert granter.calls["granted"] == 0

    clock.now = TUESDAY_22_BERLIN - M
    assert run(runtime, "retry") == 0
    assert granter.calls["granted"] == 0
    clock.now = TUESDAY_22_BERLIN
    assert run(runtime, "retry") == 1
    assert run(runtime, "retry") == 0
    active = grants.get(runtime.ctx, 1)
    assert active.state is State.ACTIVE and active.ends_at == TUESDAY_22_BERLIN + 2 * H
    assert granter.calls["granted"] == 1
    dm_saying(slack, ALICE, "is active until")
    assert slack.uploaded_to(slack.dm_channel(ALICE))  # the kubeconfig, at the start
    assert actions_of(runtime, 1) == ["requested", "approved", "activated"]

    clock.now = TUESDAY_22_BERLIN + 2 * H
    assert run(runtime, "expire") == 1
    assert state_of(runtime, 1) is State.EXPIRED


def test_an_approval_after_the_start_activates_at_once_until_the_window_ends(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 2h --at 2026-11-30T09:30Z deploy")
    ts = approval_ts(slack)
    clock.advance(H)  # 10:00 UTC: half an hour into the window
    driver.press(BOB, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert grants.get(runtime.ctx, 1).ends_at == NOW + 2 * H + 30 * M
    dm_saying(slack, ALICE, "is active until")
    assert not [t for t in dm_texts(slack, ALICE) if "your access starts at" in t]


def test_a_window_that_ends_undecided_times_out(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 1h --at 10:00Z deploy")  # 10:00-11:00 UTC
    clock.now = NOW + 2 * H - M
    assert run(runtime, "timeout") == 0
    clock.advance(M)
    assert run(runtime, "timeout") == 1
    assert state_of(runtime, 1) is State.TIMED_OUT
    dm_saying(slack, ALICE, "timed out: its window ended without a decision")
    ts = approval_ts(slack)
    wait_for(lambda: buttons(slack.message(APPROVALS_CHANNEL, ts)) == [])


def test_the_requester_cancels_an_approved_window_and_nothing_is_granted(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, granter: InMemoryGranter,
        clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 2h --at tomorrow 22:00 migrate")
    driver.press(BOB, "approve", "1", ts=approval_ts(slack))
    assert "Only the requester can cancel" in driver.ask(BOB, "cancel 1")["text"]
    assert driver.ask(ALICE, "cancel 1")["text"] == "Request #1 is cancelled."
    assert state_of(runtime, 1) is State.CANCELLED
    clock.now = TUESDAY_22_BERLIN + M
    assert run(runtime, "retry") == 0
    assert granter.calls["granted"] == granter.calls["prepare"] == 0
    assert actions_of(runtime, 1) == ["requested", "approved", "cancelled"]
    assert "cannot be cancelled any more" in driver.ask(ALICE, "cancel 1")["text"]


def test_a_window_whose_grantee_changed_fails_at_the_start_and_says_why(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, granter: InMemoryGranter,
        clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 2h --at tomorrow 22:00 migrate")
    driver.press(BOB, "approve", "1", ts=approval_ts(slack))
    slack.users[ALICE]["email"] = "alice@elsewhere.example"
    # The day between filing and the start outlasts the directory's cache of who people are.
    runtime.ctx.directory._users._items.clear()  # type: ignore[attr-defined]
    clock.now = TUESDAY_22_BERLIN
    assert run(runtime, "retry") == 1
    assert state_of(runtime, 1) is State.FAILED
    assert granter.calls["granted"] == 0
    said = dm_saying(slack, ALICE, "Your scheduled access #1")
    assert "could not start: the identity to grant changed from u0alice01@example.com to " \
           "alice@elsewhere.example" in said


@pytest.mark.parametrize(("text", "says"), [
    ("request staging edit 2h --at 2026-11-29T22:00 x", "is in the past: give a time ahead"),
    ("request staging edit 2h --at 2026-12-05T09:00 x",
     "is more than 3d ahead: pick a start by 2026-12-03 09:00 UTC (10:00 CET)"),
    ("request staging edit 2h --at whenever x", "'whenever' is not a time: write it like"),
    ("request staging edit 2h --at 25:00 x", "'25:00' is not a time of day"),
    ("request staging edit 2h --at tomorrow", "`--at tomorrow` needs a time of day too"),
    ("request prod admin 1h --break-glass --at 22:00 x", "Break-glass starts now"),
])
def test_a_start_that_cannot_be_is_refused_and_changes_nothing(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, text: str, says: str) -> None:
    answer = driver.ask(ALICE, text)
    assert says in answer["text"]
    with runtime.ctx.transaction() as uow:
        assert uow.requests.find() == [] and list(uow.audit.events()) == []
    assert not slack.channel_messages(APPROVALS_CHANNEL)


def test_the_request_form_takes_a_start(driver: Driver, slack: FakeSlack,
                                        runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    start_at = next(b for b in modal["blocks"] if b["block_id"] == "start_at")
    assert start_at["optional"] and start_at["label"]["text"] == "Start at"
    values = {"cluster": selected("pick_cluster", "staging"),
              "role": selected("pick_role", "edit"),
              "duration": text_input("duration", "2h"),
              "reason": text_input("reason", "migrate"),
              "start_at": text_input("start_at", "yesterday")}
    refused = driver.submit(ALICE, modal, values)
    assert '"response_action": "errors"' in refused.body and "start_at" in refused.body
    assert "is not a time" in refused.body
    values["start_at"] = text_input("start_at", "2026-12-24T10:00")
    assert "more than 3d ahead" in driver.submit(ALICE, modal, values).body
    values["start_at"] = text_input("start_at", "tomorrow 22:00")
    assert driver.submit(ALICE, modal, values).body == ""
    filed = dm_saying(slack, ALICE, "Request #1 filed")
    assert "Window: 2026-12-01 21:00 UTC (22:00 CET)" in filed
    assert grants.get(runtime.ctx, 1).window_start == TUESDAY_22_BERLIN


# --- escalation and re-notification -------------------------------------------------------


def test_a_waiting_request_escalates_to_the_next_approvers_who_may_then_decide(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 1h deploy")
    ts = approval_ts(slack)
    assert "not an approver" in driver.press(CAROL, "approve", "1", ts=ts)
    clock.advance(29 * M)
    assert run(runtime, "escalate") == 0
    clock.advance(M)
    assert run(runtime, "escalate") == 1
    assert run(runtime, "escalate") == 0
    (escalated,) = wait_for(lambda: slack.dms_to(CAROL))
    assert escalated["text"].startswith("Escalated to you: <@U0ALICE01> asks 1h")
    assert "and you may now" in str(escalated["blocks"])
    assert buttons(escalated) == ["approve", "deny"]
    assert actions_of(runtime, 1) == ["requested", "escalated"]

    dm = slack.dm_channel(CAROL)
    (carols,) = [ts for (channel, ts) in slack.messages if channel == dm]
    assert "You approved request #1" in driver.press(CAROL, "approve", "1", channel=dm,
                                                     ts=carols)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert actions_of(runtime, 1) == ["requested", "escalated", "approved", "activated"]
    # Every approval message shows the decision, the escalated one included.
    for channel, at in ((APPROVALS_CHANNEL, ts), (dm, carols)):
        wait_for(lambda c=channel, t=at: "Active until" in str(  # type: ignore[misc]
            slack.message(c, t)["blocks"]))


def test_approvers_are_reminded_with_back_off_until_the_timeout(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 1h deploy")
    ts = approval_ts(slack)
    reminded_at = []
    for _ in range(30):  # a pass every hour, past the 24 h timeout
        clock.advance(H)
        if run(runtime, "remind"):
            reminded_at.append(int((clock.now - NOW) / H))
    assert reminded_at == [4, 12]  # then 28 h: past the timeout
    replies = [m for m in slack.channel_messages(APPROVALS_CHANNEL) if m.get("thread_ts") == ts]
    assert len(replies) == 2 and all("has waited since" in m["text"] for m in replies)
    assert actions_of(runtime, 1) == ["requested", "renotified", "renotified"]
    assert grants.get(runtime.ctx, 1).renotified == 2


# --- Slack down while escalating or reminding ---------------------------------------------

SLACK_DOWN = ["service_unavailable", "fatal_error", "request_timeout", "ratelimited"]


def request_awaiting_approval(driver: Driver, slack: FakeSlack) -> str:
    """Alice's request #1, announced by a Slack whose 429s ask for no wait; its approval
    message's ts."""
    slack.retry_after = 0
    driver.ask(ALICE, "request staging edit 1h deploy")
    return approval_ts(slack)


@pytest.mark.parametrize("error", SLACK_DOWN)
def test_an_escalation_slack_could_not_take_is_applied_again_and_told_once(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock,
        error: str) -> None:
    request_awaiting_approval(driver, slack)
    clock.advance(30 * M)
    slack.fail("chat.postMessage", error)
    slack.fail("conversations.open", error)
    assert run(runtime, "escalate") == 0
    assert run(runtime, "escalate") == 0  # still down: still not applied
    assert grants.get(runtime.ctx, 1).escalations_applied == 0
    assert actions_of(runtime, 1) == ["requested"]
    assert "not an approver" in driver.press(CAROL, "approve", "1")
    slack.heal()
    assert run(runtime, "escalate") == 1
    assert run(runtime, "escalate") == 0
    (escalated,) = wait_for(lambda: slack.dms_to(CAROL))
    assert escalated["text"].startswith("Escalated to you")
    assert actions_of(runtime, 1) == ["requested", "escalated"]
    assert grants.get(runtime.ctx, 1).escalations_applied == 1


@pytest.mark.parametrize("error", SLACK_DOWN)
def test_a_reminder_slack_could_not_take_is_sent_on_a_later_pass_once(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock,
        error: str) -> None:
    ts = request_awaiting_approval(driver, slack)
    clock.advance(4 * H)
    slack.fail("chat.postMessage", error)
    assert run(runtime, "remind") == 0
    assert grants.get(runtime.ctx, 1).renotified == 0
    slack.heal()
    assert run(runtime, "remind") == 1
    assert run(runtime, "remind") == 0
    replies = [m for m in slack.channel_messages(APPROVALS_CHANNEL) if m.get("thread_ts") == ts]
    assert len(replies) == 1
    assert actions_of(runtime, 1).count("renotified") == 1


@pytest.mark.parametrize("refusal", ["not_in_channel", "is_archived", "channel_not_found"])
def test_a_reminder_the_approvers_channel_now_refuses_goes_to_each_approver_by_dm(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock,
        refusal: str) -> None:
    """The approval message went to the channel; the bot was removed from it, or it was
    archived or deleted since. An approvers channel the bot cannot post to falls back to
    DMs: the reminder brings each approver the request with its buttons, once."""
    driver.ask(ALICE, "request staging edit 1h deploy")
    approval_ts(slack)
    slack.channels.discard(APPROVALS_CHANNEL)
    if refusal == "not_in_channel":
        slack.outside.add(APPROVALS_CHANNEL)
    elif refusal == "is_archived":
        slack.archived.add(APPROVALS_CHANNEL)
    clock.advance(4 * H)
    assert run(runtime, "remind") == 1
    assert run(runtime, "remind") == 0
    for approver in (BOB, DAVE):
        [dm] = [m for m in slack.dms_to(approver) if m.get("blocks")]
        assert "approve" in buttons(dm), approver
    assert "You approved request #1" in driver.press(
        DAVE, "approve", "1", channel=slack.dm_channel(DAVE))
    assert actions_of(runtime, 1).count("renotified") == 1
