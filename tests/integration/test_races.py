"""Concurrent clicks: many approvers at the same instant, or one click delivered many times,
give exactly one transition, one grant call and one activation on the shared database."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from bot.domain.errors import DomainError
from bot.domain.model import MessageRef, Reach, State
from bot.domain.ports import Notice, NoticeKind, Posted
from bot.services import access, grants, reminders
from bot.services.context import Context
from tests.conftest import ALICE, APPROVER_GROUP, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory

ATTEMPTS = 50


def race(ctx: Context, request_id: int, approvers: list[str]) -> Counter[str]:
    barrier = threading.Barrier(len(approvers))

    def click(user: str) -> str:
        barrier.wait()
        try:
            return access.approve(ctx, request_id, user).state.value
        except DomainError as error:
            return type(error).__name__

    with ThreadPoolExecutor(max_workers=len(approvers)) as pool:
        return Counter(pool.map(click, approvers))


def audit_actions(ctx: Context, request_id: int) -> Counter[str]:
    with ctx.transaction() as uow:
        return Counter(e.action for e in uow.audit.events() if e.request_id == request_id)


@pytest.mark.parametrize("who", ["fifty-approvers", "one-approver-fifty-clicks"])
def test_concurrent_approvals_grant_once(ctx: Context, granter: InMemoryGranter,
                                         directory: StaticDirectory, who: str) -> None:
    approvers = [f"U0RACE{n:04d}" for n in range(ATTEMPTS)]
    directory.groups[APPROVER_GROUP] = set(approvers)
    clicks = approvers if who == "fifty-approvers" else [BOB] * ATTEMPTS
    request = access.file_request(ctx, ALICE, "staging", "edit", duration=timedelta(hours=1),
                                  reason="race")
    assert request.id is not None

    outcomes = race(ctx, request.id, clicks)

    assert outcomes["active"] == 1, outcomes
    assert outcomes["InvalidTransition"] == ATTEMPTS - 1, outcomes
    assert granter.calls["grant"] == 1
    assert granter.calls["granted"] == 1
    final = grants.get(ctx, request.id)
    assert final.state is State.ACTIVE
    assert len(final.approvals) == 1
    counted = audit_actions(ctx, request.id)
    assert counted["approved"] == 1 and counted["activated"] == 1


def test_concurrent_quorum_of_two_counts_each_approver_once(ctx: Context,
                                                             granter: InMemoryGranter) -> None:
    raced_ctx = dataclasses.replace(ctx)
    request = access.file_request(raced_ctx, ALICE, "prod", "view",
                                  duration=timedelta(hours=1), reason="race")
    assert request.id is not None
    outcomes = race(raced_ctx, request.id, ["U0BOB0002", "U0CAROL03", "U0DAVE004"] * 10)
    assert outcomes["active"] == 1, outcomes
    assert granter.calls["granted"] == 1
    final = grants.get(ctx, request.id)
    assert len(final.approvals) == 2
    assert audit_actions(ctx, request.id)["activated"] == 1


# --- approval messages after decisions that race -------------------------------------------

SHOWS_ITSELF = {NoticeKind.FILED, NoticeKind.ON_CALL_APPROVED, NoticeKind.ESCALATED,
                NoticeKind.UNREACHABLE, NoticeKind.APPROVED}
"""Notices that do not update the approval messages in place (as Slack's notifier)."""


class ShowingNotifier(RecordingNotifier):
    """Posts one approval message per filed request and keeps what each shows as last updated
    in place: the request's state and the approvals it misses. ``on_the_way`` runs while an
    update is on its way to Slack, before it lands."""

    def __init__(self) -> None:
        super().__init__()
        self.approval: dict[MessageRef, tuple[State, int]] = {}
        self.on_the_way: Callable[[Notice], None] = lambda notice: None

    def notify(self, notice: Notice) -> Posted | None:  # type: ignore[override]
        super().notify(notice)
        self.on_the_way(notice)
        shown = (notice.request.state, notice.approvals_missing)
        if notice.kind is NoticeKind.FILED:
            ref = MessageRef("C0APPROVE", f"{notice.request.id}.0001")
            with self.lock:
                self.approval[ref] = shown
            return Posted(Reach(channel="C0APPROVE"), (ref,))
        if notice.kind not in SHOWS_ITSELF:
            with self.lock:
                self.approval.update(dict.fromkeys(notice.messages, shown))
        return None


@pytest.fixture
def showing(ctx: Context) -> tuple[Context, ShowingNotifier]:
    notifier = ShowingNotifier()
    return dataclasses.replace(ctx, notifier=notifier), notifier


def _first_approval_racing(notice: Notice) -> bool:
    return notice.kind is NoticeKind.DECISION and notice.request.state is State.PENDING


RACERS: dict[str, tuple[Callable[[Context, int], object], Callable[[Notice], bool], State]] = {
    "a second approval": (lambda c, i: access.approve(c, i, CAROL),
                          _first_approval_racing, State.ACTIVE),
    "a denial": (lambda c, i: access.deny(c, i, CAROL, "not now"),
                 _first_approval_racing, State.DENIED),
    "a cancellation": (lambda c, i: access.cancel(c, i, ALICE),
                       _first_approval_racing, State.CANCELLED),
    "the quorum before the message was stored": (
        lambda c, i: (access.approve(c, i, CAROL), access.approve(c, i, DAVE)),
        lambda n: n.kind is NoticeKind.FILED, State.ACTIVE),
}


@pytest.mark.parametrize("racer", list(RACERS))
def test_an_update_overtaken_by_a_later_decision_leaves_the_message_showing_the_last(
        showing: tuple[Context, ShowingNotifier], racer: str) -> None:
    """Bob approves first (one of two); while his update is on its way to Slack, Carol
    decides and her update lands first. Bob's lands last: without reading again after it,
    the message would show his stale "one more approval" with its buttons. In the last case
    Carol and Dave approve (by command) before the approval message was even stored."""
    ctx, notifier = showing
    decide, races, final = RACERS[racer]
    interleaved = threading.Event()

    def overtaken(notice: Notice) -> None:
        if races(notice) and not interleaved.is_set():
            interleaved.set()
            other = threading.Thread(target=decide, args=(ctx, notice.request.id))
            other.start()
            other.join()
            assert {state for state, _ in notifier.approval.values()} <= {final}

    notifier.on_the_way = overtaken
    request = access.file_request(ctx, ALICE, "prod", "view", duration=timedelta(hours=1),
                                  reason="race")
    assert request.id is not None
    if not interleaved.is_set():
        access.approve(ctx, request.id, BOB)
    assert interleaved.is_set()
    assert grants.get(ctx, request.id).state is final
    assert {state for state, _ in notifier.approval.values()} == {final}, notifier.approval


def test_a_cancellation_overtaking_the_approval_of_a_window_ahead_is_what_stays_shown(
        showing: tuple[Context, ShowingNotifier]) -> None:
    """Carol's approval completes the quorum of a window that starts in an hour; Alice
    cancels while Carol's update is on its way: the message ends cancelled, not approved
    with a Cancel button."""
    ctx, notifier = showing
    request = access.file_request(ctx, ALICE, "prod", "view", duration=timedelta(hours=1),
                                  reason="race", at="09:00Z")
    assert request.id is not None
    access.approve(ctx, request.id, BOB)
    interleaved = threading.Event()

    def overtaken(notice: Notice) -> None:
        if notice.kind is NoticeKind.DECISION and notice.request.state is State.APPROVED \
                and not interleaved.is_set():
            interleaved.set()
            other = threading.Thread(target=access.cancel, args=(ctx, notice.request.id, ALICE))
            other.start()
            other.join()

    notifier.on_the_way = overtaken
    assert access.approve(ctx, request.id, CAROL).state is State.APPROVED
    assert interleaved.is_set()
    assert grants.get(ctx, request.id).state is State.CANCELLED
    assert {state for state, _ in notifier.approval.values()} == {State.CANCELLED}


def test_a_reminder_overtaken_by_the_approvals_leaves_the_message_showing_the_grant(
        showing: tuple[Context, ShowingNotifier], clock: FakeClock) -> None:
    """The reminder pass shows the request still waiting; while its update is on its way,
    Bob and Carol approve and their updates land first."""
    ctx, notifier = showing
    request = access.file_request(ctx, ALICE, "prod", "view", duration=timedelta(hours=1),
                                  reason="race")
    assert request.id is not None
    interleaved = threading.Event()

    def overtaken(notice: Notice) -> None:
        if notice.kind is NoticeKind.STILL_PENDING and not interleaved.is_set():
            interleaved.set()
            other = threading.Thread(target=lambda: (access.approve(ctx, request.id, BOB),
                                                     access.approve(ctx, request.id, CAROL)))
            other.start()
            other.join()

    notifier.on_the_way = overtaken
    clock.advance(timedelta(hours=4))
    assert reminders.renotify_pending(ctx) == 1
    assert interleaved.is_set()
    assert grants.get(ctx, request.id).state is State.ACTIVE
    assert {state for state, _ in notifier.approval.values()} == {State.ACTIVE}


@pytest.mark.parametrize("round_", range(3))
def test_decisions_at_once_leave_every_approval_message_showing_the_final_state(
        showing: tuple[Context, ShowingNotifier], round_: int) -> None:
    """Three approvers, a denial and the requester's cancellation at the same instant, each
    update reaching Slack after a random delay, those showing the request still pending the
    slowest: the message ends as the request does."""
    ctx, notifier = showing
    pace = random.Random(round_)
    notifier.on_the_way = lambda notice: time.sleep(
        (0.05 if notice.request.state is State.PENDING else 0) + pace.random() / 100)
    request = access.file_request(ctx, ALICE, "prod", "view", duration=timedelta(hours=1),
                                  reason="race")
    assert request.id is not None
    request_id = request.id
    clicks: list[Callable[[], object]] = [
        lambda: access.approve(ctx, request_id, BOB),
        lambda: access.approve(ctx, request_id, CAROL),
        lambda: access.approve(ctx, request_id, DAVE),
        lambda: access.deny(ctx, request_id, DAVE, "no"),
        lambda: access.cancel(ctx, request_id, ALICE),
    ]
    pace.shuffle(clicks)
    barrier = threading.Barrier(len(clicks))

    def click(action: Callable[[], object]) -> None:
        barrier.wait()
        with contextlib.suppress(DomainError):
            action()

    with ThreadPoolExecutor(max_workers=len(clicks)) as pool:
        list(pool.map(click, clicks))

    final = grants.get(ctx, request_id).state
    assert {state for state, _ in notifier.approval.values()} == {final}, notifier.approval


def test_a_database_failing_after_the_decision_leaves_the_decision_standing(
        showing: tuple[Context, ShowingNotifier], monkeypatch: pytest.MonkeyPatch) -> None:
    """The approval committed; reading the request again after its update fails: the
    approver still hears that their approval was recorded, never an error."""
    ctx, notifier = showing
    request = access.file_request(ctx, ALICE, "prod", "view", duration=timedelta(hours=1),
                                  reason="race")
    assert request.id is not None
    original = Context.transaction

    def failing_after(notice: Notice) -> None:
        if notice.kind is NoticeKind.DECISION:
            monkeypatch.setattr(Context, "transaction", broken)

    def broken(self: Context) -> Any:
        raise OSError("the database went away")

    notifier.on_the_way = failing_after
    approved = access.approve(ctx, request.id, BOB)
    monkeypatch.setattr(Context, "transaction", original)
    assert approved.state is State.PENDING and approved.approvals_missing == 1
    assert len(grants.get(ctx, request.id).approvals) == 1
