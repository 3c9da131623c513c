"""What the use cases put in a notice: the audience resolved, the approvals still missing
computed once, the approval messages posted before; and what the notifier posted, stored."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from datetime import timedelta

import pytest

from bot.config import Config, parse_config
from bot.domain import lifecycle
from bot.domain.model import AccessRequest, MessageRef, Reach, State, Undelivered
from bot.domain.policy import RolePolicy
from bot.domain.ports import Audience, Notice, NoticeKind, People, Posted
from bot.services import access, reminders
from bot.services.context import Context
from tests.conftest import ADMIN, ALICE, BOB, CAROL, DAVE, TEST_CONFIG
from tests.fakes.ports import FakeClock, RecordingNotifier, StaticDirectory

H = timedelta(hours=1)


class PostingNotifier(RecordingNotifier):
    """Records every notice; posts one approval message for each announcement, as Slack's
    notifier does, and says so."""

    def notify(self, notice: Notice) -> Posted | None:  # type: ignore[override]
        super().notify(notice)
        announces = notice.kind is NoticeKind.FILED or (
            notice.kind is NoticeKind.STILL_PENDING and not notice.messages)
        if not announces:
            return None
        return Posted(Reach(channel="C0APPROVE"),
                      (MessageRef("C0APPROVE", f"{notice.request.id}.000{len(self.notices)}"),))


@pytest.fixture
def posting(ctx: Context) -> tuple[Context, PostingNotifier]:
    notifier = PostingNotifier()
    return dataclasses.replace(ctx, notifier=notifier), notifier


def test_an_approval_computes_the_approvals_missing_once_and_the_notice_carries_it(
        ctx: Context, notifier: RecordingNotifier, monkeypatch: pytest.MonkeyPatch) -> None:
    request = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="debug")
    assert request.id is not None
    counted: list[int] = []
    original: Callable[[AccessRequest, RolePolicy], int] = lifecycle.approvals_missing

    def counting(request: AccessRequest, policy: RolePolicy) -> int:
        counted.append(original(request, policy))
        return counted[-1]

    monkeypatch.setattr(lifecycle, "approvals_missing", counting)
    access.approve(ctx, request.id, BOB)

    [decision] = [n for n in notifier.notices if n.kind is NoticeKind.DECISION]
    assert counted == [1] and decision.approvals_missing == 1


def test_a_filed_request_names_its_approvers_groups_expanded_never_the_requester(
        ctx: Context, notifier: RecordingNotifier) -> None:
    access.file_request(ctx, ALICE, "staging", "edit", duration=H, reason="fix")
    access.file_request(ctx, DAVE, "staging", "edit", duration=H, reason="fix")

    by_alice, by_dave = [n.audience for n in notifier.notices if n.kind is NoticeKind.FILED]
    assert by_alice == Audience(approvers=(BOB, DAVE))  # DAVE through the group
    assert by_dave == Audience(approvers=(BOB,))


def test_what_the_notifier_posted_is_stored_and_carried_by_the_notices_after(
        ctx: Context, posting: tuple[Context, PostingNotifier]) -> None:
    pctx, notifier = posting
    request = access.file_request(pctx, ALICE, "prod", "view", duration=H, reason="debug")
    assert request.id is not None
    [filed] = notifier.notices
    posted = (MessageRef("C0APPROVE", f"{request.id}.0001"),)
    assert filed.messages == () and filed.approvals_missing == 2

    access.approve(pctx, request.id, BOB)
    access.approve(pctx, request.id, CAROL)

    carried = {n.kind: n.messages for n in notifier.notices}
    assert carried[NoticeKind.DECISION] == posted and carried[NoticeKind.ACTIVE] == posted


def test_a_reminder_announces_anew_where_nothing_was_posted_and_stores_it(
        posting: tuple[Context, PostingNotifier], clock: FakeClock) -> None:
    pctx, notifier = posting
    quiet = dataclasses.replace(pctx, notifier=RecordingNotifier())
    request = access.file_request(quiet, ALICE, "prod", "view", duration=H, reason="x")
    assert request.id is not None and request.state is State.PENDING

    clock.advance(4 * H)
    assert reminders.renotify_pending(pctx) == 1
    clock.advance(8 * H)
    assert reminders.renotify_pending(pctx) == 1

    first, second = notifier.notices
    assert first.audience == Audience(approvers=(BOB, CAROL, DAVE)) and first.messages == ()
    assert second.audience is None and len(second.messages) == 1


def test_nobody_reached_carries_the_admins(ctx: Context, notifier: RecordingNotifier) -> None:
    class Unreachable(RecordingNotifier):
        def notify(self, notice: Notice) -> Posted | None:  # type: ignore[override]
            super().notify(notice)
            return Posted(Reach()) if notice.kind is NoticeKind.FILED else None

    nobody = Unreachable()
    access.file_request(dataclasses.replace(ctx, notifier=nobody), ALICE, "prod", "view",
                          duration=H, reason="x")

    [alert] = [n for n in nobody.notices if n.kind is NoticeKind.UNREACHABLE]
    assert alert.audience == Audience(admins=(ADMIN,))


class RefusingConversation(RecordingNotifier):
    """A conversation the bot cannot post in; every approver reached by DM."""

    def notify(self, notice: Notice) -> Posted | None:  # type: ignore[override]
        super().notify(notice)
        audience = notice.audience or Audience()
        if audience.conversation:
            return Posted(Reach(undelivered=(Undelivered(audience.conversation,
                                                         "not_in_channel"),)))
        return Posted(Reach(people=audience.approvers))


@pytest.fixture
def with_channel(ctx: Context, config: Config) -> Context:
    data = copy.deepcopy(TEST_CONFIG)
    data["clusters"]["prod"]["approvers_channel"] = "C0APPROVE"
    return dataclasses.replace(ctx, config=parse_config(data, config.source))


def test_the_approvers_are_expanded_only_when_their_conversation_cannot_be_posted_in(
        with_channel: Context, directory: StaticDirectory) -> None:
    asked: list[object] = []
    original = directory.users

    def users(principals: Iterable[str]) -> People:
        asked.append(principals)
        return original(principals)

    directory.users = users  # type: ignore[method-assign]
    posting = PostingNotifier()
    access.file_request(dataclasses.replace(with_channel, notifier=posting), ALICE, "prod",
                          "view", duration=H, reason="x")
    assert [n.audience for n in posting.notices] == [Audience(conversation="C0APPROVE")]
    assert asked == []

    refusing = RefusingConversation()
    filed = access.file_request(dataclasses.replace(with_channel, notifier=refusing), BOB,
                                  "prod", "view", duration=H, reason="x")

    assert [n.audience for n in refusing.notices] == [
        Audience(conversation="C0APPROVE"), Audience(approvers=(CAROL, DAVE))]
    assert filed.notified == Reach(people=(CAROL, DAVE), undelivered=(
        Undelivered("C0APPROVE", "not_in_channel"),))
