"""The Slack notifier against the local Slack server, with no database and no configuration:
everything it says comes from the notice, and it hands back what it posted.

Any SQL statement run while these tests run fails them (a listener on every engine)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event

from bot.adapters.slack.client import make_client
from bot.adapters.slack.notifier import SlackNotifier
from bot.config import Settings
from bot.domain.errors import Undeliverable
from bot.domain.model import (
    AccessRequest,
    Approval,
    Decision,
    MessageRef,
    Reach,
    State,
    Undelivered,
)
from bot.domain.ports import Audience, Delivery, Notice, NoticeKind, Posted
from bot.domain.reasons import ReasonPiece
from bot.domain.reviews import AccessReview, ReviewItem
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack

ALICE, BOB, CAROL, ADMIN = "U0ALICE01", "U0BOB0002", "U0CAROL03", "U0ADMIN05"
CHANNEL, OUTSIDE, GROUP = "C0APPROVE", "C0OUTSIDE", "S0SRE0001"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_database() -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the notifier ran SQL")

    event.listen(Engine, "before_cursor_execute", refuse)
    yield
    event.remove(Engine, "before_cursor_execute", refuse)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(users={u: {} for u in (ALICE, BOB, CAROL, ADMIN)}, channels={CHANNEL},
                     outside={OUTSIDE}, deactivated={CAROL}).start()
    yield fake
    fake.stop()


@pytest.fixture
def notifier(slack: FakeSlack) -> SlackNotifier:
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url)
    return SlackNotifier(make_client(settings), clock=lambda: NOW)


def pending(request_id: int = 7, **fields: Any) -> AccessRequest:
    return AccessRequest(requester_id=ALICE, cluster="prod", role="view",
                         duration=timedelta(hours=1), reason="debug", subject="alice@example.com",
                         created_at=NOW - timedelta(hours=4), id=request_id, **fields)


def test_a_new_request_goes_to_the_approvers_conversation(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    notice = Notice(NoticeKind.FILED, pending(), approvals_missing=2,
                    audience=Audience(conversation=CHANNEL, approvers=(BOB,)))

    posted = notifier.notify(notice)

    [(channel, ts)] = list(slack.messages)
    assert posted == Posted(Reach(channel=CHANNEL), (MessageRef(CHANNEL, ts),))
    assert channel == CHANNEL and "Waiting for 2 more approvals" in slack.message(CHANNEL, ts)[
        "text"]
    assert not slack.called("conversations.open")  # the approvers are not DMed as well


def test_a_conversation_that_refuses_is_reported_for_the_use_case_to_fall_back(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    notice = Notice(NoticeKind.FILED, pending(), audience=Audience(conversation=OUTSIDE))

    posted = notifier.notify(notice)

    assert posted == Posted(Reach(undelivered=(Undelivered(OUTSIDE, "not_in_channel"),)))
    assert not slack.messages and not slack.called("conversations.open")


def test_each_approver_given_is_told_on_their_own(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    notice = Notice(NoticeKind.FILED, pending(), approvals_missing=1, audience=Audience(
        approvers=(BOB, CAROL), unlisted=(GROUP,)))

    posted = notifier.notify(notice)

    [(channel, ts)] = list(slack.messages)
    assert posted == Posted(
        Reach(people=(BOB,), undelivered=(
            Undelivered(GROUP, "usergroup_unavailable"), Undelivered(CAROL, "user_disabled"))),
        (MessageRef(slack.dm_channel(BOB), ts),))
    assert "Waiting for 1 more approval" in slack.message(channel, ts)["text"]


def test_a_decision_updates_the_messages_it_is_given(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    first = notifier.notify(Notice(NoticeKind.FILED, pending(), approvals_missing=2,
                                   audience=Audience(conversation=CHANNEL)))
    assert first is not None
    request = pending(approvals=[Approval(BOB, Decision.APPROVE, NOW)])

    posted = notifier.notify(Notice(NoticeKind.DECISION, request, actor=BOB,
                                    approvals_missing=1, messages=first.messages))

    assert posted is None  # nothing new to remember
    [update] = slack.called("chat.update")
    assert (update["channel"], update["ts"]) == (CHANNEL, first.messages[0].message)
    assert "Waiting for 1 more approval" in update["text"]


def test_a_refresh_updates_the_approval_messages_and_tells_nobody(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    first = notifier.notify(Notice(NoticeKind.FILED, pending(), approvals_missing=2,
                                   audience=Audience(conversation=CHANNEL)))
    assert first is not None
    denied = pending(state=State.DENIED, ended_by=CAROL, end_reason="not now")

    posted = notifier.notify(Notice(NoticeKind.REFRESHED, denied, approvals_missing=2,
                                    messages=first.messages))

    assert posted is None
    [update] = slack.called("chat.update")
    assert (update["channel"], update["ts"]) == (CHANNEL, first.messages[0].message)
    assert "Waiting for" not in update["text"] and "actions" not in str(update["blocks"])
    assert len(slack.called("chat.postMessage")) == 1 and not slack.called("conversations.open")


def test_a_reminder_threads_under_each_message_or_announces_anew(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    audience = Audience(conversation=CHANNEL)
    fresh = notifier.notify(Notice(NoticeKind.STILL_PENDING, pending(), approvals_missing=1,
                                   audience=audience))
    assert fresh is not None and fresh.reach == Reach(channel=CHANNEL) and fresh.messages

    again = notifier.notify(Notice(NoticeKind.STILL_PENDING, pending(), approvals_missing=1,
                                   messages=fresh.messages))

    assert again == Posted(Reach(channel=CHANNEL))
    reply = slack.called("chat.postMessage")[-1]
    assert reply["thread_ts"] == fresh.messages[0].message and "has waited since" in reply["text"]


def test_nobody_reached_tells_the_admins_it_is_given_then_the_requester(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    nobody = Reach(undelivered=(Undelivered(OUTSIDE, "not_in_channel"),))

    posted = notifier.notify(Notice(NoticeKind.UNREACHABLE, pending(), reach=nobody,
                                    audience=Audience(admins=(ADMIN,))))

    assert posted == Posted(Reach(people=(ADMIN,)))
    assert "reached no approver" in slack.dms_to(ADMIN)[0]["text"]
    assert "an admin has been told" in slack.dms_to(ALICE)[0]["text"]


def test_the_requester_hears_of_the_end_with_no_message_to_update(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    request = pending(state=State.DENIED, ended_by=BOB, end_reason="not now")

    assert notifier.notify(Notice(NoticeKind.DENIED, request, actor=BOB)) is None

    assert not slack.called("chat.update")
    assert "was denied" in slack.dms_to(ALICE)[0]["text"]


def test_the_weekly_review_goes_to_a_conversation_or_to_one_approver(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    grant = pending(state=State.ACTIVE, activated_at=NOW, ends_at=NOW + timedelta(hours=1))

    review = AccessReview("2026-11-30T09:00", CHANNEL, (ReviewItem(grant),))
    notifier.review(review)
    notifier.review(dataclasses.replace(review, audience=BOB))

    assert [c["users"] for c in slack.called("conversations.open")] == [BOB]
    assert [p["channel"] for p in slack.called("chat.postMessage")] == [
        CHANNEL, slack.dm_channel(BOB)]


def test_a_weekly_message_refused_as_invalid_is_reported_to_the_admins_given(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    from bot.domain.errors import Undeliverable

    grant = pending(state=State.ACTIVE, activated_at=NOW, ends_at=NOW + timedelta(hours=1))
    slack.fail("chat.postMessage", "invalid_blocks", channel=slack.dm_channel(BOB))

    with pytest.raises(Undeliverable):
        notifier.remind(BOB, [grant], admins=(ADMIN,))

    assert "was not sent" in slack.dms_to(ADMIN)[0]["text"]


@pytest.mark.parametrize("kind", [NoticeKind.FILED, NoticeKind.ESCALATED,
                                  NoticeKind.ON_CALL_APPROVED])
def test_every_announcement_links_the_tickets_in_its_reason(
        slack: FakeSlack, kind: NoticeKind) -> None:
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url)
    notifier = SlackNotifier(make_client(settings), clock=lambda: NOW, links=lambda r: (
        ReasonPiece("fix "), ReasonPiece("OPS-1", "https://jira.example.com/browse/OPS-1")))
    on_call = [Approval("policy", Decision.APPROVE, NOW, "on-call: flagged for review; x")]
    request = pending(approvals=on_call if kind is NoticeKind.ON_CALL_APPROVED else [])
    notifier.notify(Notice(kind, request, audience=Audience(conversation=CHANNEL)))

    [(channel, ts)] = list(slack.messages)
    assert "<https://jira.example.com/browse/OPS-1|OPS-1>" in str(
        slack.message(channel, ts)["blocks"])


@pytest.mark.parametrize(("method", "error"), [
    ("chat.postMessage", "messages_tab_disabled"),
    ("files.completeUploadExternal", "restricted_action"),
    ("conversations.open", "user_not_visible")])
def test_who_asked_on_someones_behalf_hears_the_truth_about_how_to_connect(
        notifier: SlackNotifier, slack: FakeSlack, method: str, error: str) -> None:
    """Bob asked for Alice; her DM or her kubeconfig could not be delivered: Bob is not told
    she received how to connect, but that she did not, and why."""
    dm = slack.dm_channel(ALICE)
    slack.fail(method, error, **({"users": ALICE} if method == "conversations.open"
                                 else {"channel_id": dm} if method.startswith("files")
                                 else {"channel": dm}))
    grant = dataclasses.replace(pending(), requester_id=BOB, grantee_id=ALICE,
                                state=State.ACTIVE, activated_at=NOW,
                                ends_at=NOW + timedelta(hours=1))
    delivery = Delivery("Use the attached kubeconfig.", "kubeconfig.yaml", b"apiVersion: v1")

    with contextlib.suppress(Undeliverable):
        notifier.notify(Notice(NoticeKind.ACTIVE, grant, delivery=delivery))

    [told] = [m["text"] for m in slack.dms_to(BOB) if "you made for" in m["text"]]
    assert "received how to connect" not in told
    assert f"could not be sent how to connect: Slack answered `{error}`" in told


def test_nobody_reached_among_hundreds_of_approvers_is_still_told_within_slacks_limits(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    """A group of 300 approvers none of whom takes DMs from apps: the admins and the
    requester still hear of it (Slack refuses a section over 3,000 characters)."""
    nobody = Reach(undelivered=tuple(Undelivered(f"U0GONE{n:04d}", "messages_tab_disabled")
                                     for n in range(300)))

    posted = notifier.notify(Notice(NoticeKind.UNREACHABLE, pending(), reach=nobody,
                                    audience=Audience(admins=(ADMIN,))))

    assert posted == Posted(Reach(people=(ADMIN,)))
    assert "reached no approver" in slack.dms_to(ADMIN)[0]["text"]
    assert "an admin has been told" in slack.dms_to(ALICE)[0]["text"]
    assert slack.errors() == []


def test_a_message_to_a_person_is_one_call_and_a_file_goes_to_the_dm_it_answered(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    request = pending(state=State.ACTIVE, activated_at=NOW, ends_at=NOW + timedelta(hours=1))
    notifier.notify(Notice(NoticeKind.EXPIRED, dataclasses.replace(
        request, state=State.EXPIRED)))
    assert slack.addressed_to_users() == [ALICE]  # posted by her user ID: Slack opens the DM
    assert not slack.called("conversations.open")
    assert len(slack.dms_to(ALICE)) == 1

    notifier.notify(Notice(NoticeKind.APPROVED, request, delivery=Delivery(
        "use the file", filename="kubeconfig.yaml", content=b"kubeconfig")))
    assert not slack.called("conversations.open")  # the message's answer named the DM
    assert slack.uploaded_to(slack.dm_channel(ALICE))


def test_a_file_whose_message_did_not_go_opens_the_dm(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    request = pending(state=State.ACTIVE, activated_at=NOW, ends_at=NOW + timedelta(hours=1))
    slack.fail("chat.postMessage", "channel_not_found", times=1, channel=slack.dm_channel(ALICE))
    with pytest.raises(Undeliverable):  # the message, after the file was tried
        notifier.notify(Notice(NoticeKind.APPROVED, request, delivery=Delivery(
            "use the file", filename="kubeconfig.yaml", content=b"kubeconfig")))
    assert [c["users"] for c in slack.called("conversations.open")] == [ALICE]
    assert slack.uploaded_to(slack.dm_channel(ALICE))


def test_a_person_who_cannot_get_dms_is_reported_of_their_kind(
        notifier: SlackNotifier, slack: FakeSlack) -> None:
    request = dataclasses.replace(pending(state=State.EXPIRED), requester_id=CAROL)
    with pytest.raises(Undeliverable) as refused:
        notifier.notify(Notice(NoticeKind.EXPIRED, request))
    assert (refused.value.error, refused.value.kind) == ("user_disabled",
                                                           Undeliverable.RECIPIENT)
    slack.fail("conversations.open", "service_unavailable", users=ALICE)
    with pytest.raises(Undeliverable) as later:
        notifier.notify(Notice(NoticeKind.EXPIRED, pending(state=State.EXPIRED)))
    assert later.value.kind == Undeliverable.TEMPORARY


def test_only_the_latest_dm_channels_are_kept(notifier: SlackNotifier, slack: FakeSlack,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.adapters.slack.notifier.DM_CHANNELS", 1)
    request = pending(state=State.ACTIVE, activated_at=NOW, ends_at=NOW + timedelta(hours=1))
    notifier.notify(Notice(NoticeKind.EXPIRED, dataclasses.replace(request, state=State.EXPIRED)))
    notifier.notify(Notice(NoticeKind.EXPIRED, dataclasses.replace(
        request, state=State.EXPIRED, requester_id=BOB)))  # Bob's DM replaces Alice's
    slack.fail("chat.postMessage", "channel_not_found", times=1, channel=slack.dm_channel(ALICE))
    with pytest.raises(Undeliverable):  # her message, this time: its answer names no DM
        notifier.notify(Notice(NoticeKind.APPROVED, request, delivery=Delivery(
            "use the file", filename="kubeconfig.yaml", content=b"kubeconfig")))
    assert [c["users"] for c in slack.called("conversations.open")] == [ALICE]
    assert slack.uploaded_to(slack.dm_channel(ALICE))


def test_a_person_messaged_again_keeps_their_dm_channel(
        notifier: SlackNotifier, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.adapters.slack.notifier.DM_CHANNELS", 2)
    request = pending(state=State.ACTIVE, activated_at=NOW, ends_at=NOW + timedelta(hours=1))

    def expired_to(person: str) -> None:
        notifier.notify(Notice(NoticeKind.EXPIRED, dataclasses.replace(
            request, state=State.EXPIRED, requester_id=person)))

    expired_to(ALICE)
    expired_to(BOB)
    expired_to(ALICE)  # Alice messaged again: Bob is now the least recent
    expired_to(ADMIN)  # one more than the bound: Bob's channel should go, not Alice's
    slack.fail("chat.postMessage", "channel_not_found", times=1, channel=slack.dm_channel(ALICE))
    with pytest.raises(Undeliverable):  # her message fails: the file uses the channel kept
        notifier.notify(Notice(NoticeKind.APPROVED, request, delivery=Delivery(
            "use the file", filename="kubeconfig.yaml", content=b"kubeconfig")))
    assert slack.uploaded_to(slack.dm_channel(ALICE))
    assert slack.called("conversations.open") == []  # Alice's DM was kept as recent
