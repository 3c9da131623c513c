"""Scheduled windows, escalation steps and re-notification with back-off, as the job passes run
them on one database: the grant owed at a window's start is made once however many workers
race for it, a window that ends undecided times out then (not at the role's timeout), each
escalation step and each reminder happens once across replicas."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.config import Config, parse_config
from bot.domain.errors import InvalidTransition, NotAuthorized, PolicyViolation, Undeliverable
from bot.domain.model import OperationKind, OperationState, State
from bot.domain.ports import Notice, NoticeKind
from bot.jobs import JOBS
from bot.services import access, escalations, grants, reminders
from bot.services.context import Context
from tests.conftest import ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory
from tests.integration.test_jobs import MONDAY_8, make_context

H, M, D = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)
DEVS, LEADS = "S0DEVS001", "S0LEADS01"


@pytest.fixture
def policy_config() -> Config:
    return parse_config({
        "schedules": {"renotify_after": "1h"},
        "clusters": {"prod": {
            "backend": "rbac",
            "kubernetes": {"server": "https://prod.example", "kubeconfig": "/dev/null"},
            "approvers": [BOB],
            "max_schedule_ahead": "3d",
            "escalation": [{"after": "30m", "approvers": [CAROL]},
                           {"after": "2h", "approvers": [LEADS]}],
            "roles": {
                "edit": {"cluster_role": "edit", "timeout": "8h", "requesters": [DEVS]},
                "view": {"cluster_role": "view", "auto_approve_up_to": "4h"},
            },
        }},
    }, Path("policy.yaml"))


@pytest.fixture
def runners(engine: Engine, policy_config: Config, granter: InMemoryGranter,
            notifier: RecordingNotifier, directory: StaticDirectory,
            clock: FakeClock) -> list[Context]:
    """Two replicas of the bot on one database."""
    clock.now = MONDAY_8
    directory.groups.update({DEVS: {ALICE}, LEADS: {DAVE}})
    directory.zones[ALICE] = "Europe/Berlin"
    return [make_context(engine, policy_config, granter, notifier, directory, clock,
                         worker=f"replica-{n}") for n in range(2)]


def race(contexts: list[Context], job: Callable[[Context], int]) -> list[int]:
    """Run one job pass on every replica at the same moment."""
    barrier = threading.Barrier(len(contexts))

    def run(ctx: Context) -> int:
        barrier.wait()
        return job(ctx)

    with ThreadPoolExecutor(max_workers=len(contexts)) as pool:
        return list(pool.map(run, contexts))


def scheduled(ctx: Context, at: str = "tomorrow 22:00", duration: timedelta = 2 * H,
              role: str = "edit") -> int:
    request = access.file_request(ctx, ALICE, "prod", role, duration=duration,
                                  reason="migrate the db", at=at)
    assert request.id is not None
    return request.id


# --- scheduled windows --------------------------------------------------------------------


def test_the_grant_owed_at_the_start_is_made_once_by_racing_workers(
        runners: list[Context], granter: InMemoryGranter, notifier: RecordingNotifier,
        clock: FakeClock) -> None:
    one = runners[0]
    request_id = scheduled(one)  # Tuesday 22:00 in Berlin: 21:00 UTC
    start = MONDAY_8.replace(day=1, month=12, hour=21)
    assert grants.get(one, request_id).window_start == start
    approved = access.approve(one, request_id, BOB)
    assert approved.state is State.APPROVED and granter.calls["granted"] == 0
    with one.transaction() as uow:
        owed = uow.operations.get(request_id, OperationKind.GRANT)
    assert owed is not None and owed.next_attempt_at == start  # owed, due at the start
    clock.now = start - M
    assert race(runners, JOBS["retry"]) == [0, 0]
    assert granter.calls["granted"] == 0
    clock.now = start
    assert sorted(race(runners, JOBS["retry"])) == [0, 1]
    active = grants.get(one, request_id)
    assert active.state is State.ACTIVE
    assert (active.activated_at, active.ends_at) == (start, start + 2 * H)
    assert granter.calls["granted"] == 1
    assert granter.active[request_id][1] == start + 2 * H
    assert notifier.kinds(request_id).count(NoticeKind.ACTIVE) == 1
    assert race(runners, JOBS["retry"]) == [0, 0]
    with one.transaction() as uow:
        actions = [e.action for e in uow.audit.events() if e.request_id == request_id]
    assert actions == ["requested", "approved", "activated"]


def test_an_approval_after_the_start_grants_at_once_until_the_window_ends(
        runners: list[Context], granter: InMemoryGranter, clock: FakeClock) -> None:
    one = runners[0]
    request_id = scheduled(one, at="09:00Z")  # an hour from now
    clock.advance(H + 30 * M)  # half an hour into the window
    active = access.approve(one, request_id, BOB)
    assert active.state is State.ACTIVE
    assert active.ends_at == MONDAY_8 + 3 * H  # the window's end, not 2 h from now
    assert granter.calls["granted"] == 1


def test_a_window_that_ends_undecided_times_out_then(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    far = scheduled(one, at="2026-12-02T10:00Z")  # ends Wednesday 12:00 UTC, 52 h away
    soon = scheduled(one, at="09:30Z", role="view", duration=5 * H)  # pending: over 4 h
    clock.advance(8 * H)  # the role's 8 h timeout: only the window that ended goes
    assert race(runners, JOBS["timeout"]) in ([1, 0], [0, 1])
    assert grants.get(one, soon).state is State.TIMED_OUT
    assert grants.get(one, soon).end_reason == "its window ended without a decision"
    assert grants.get(one, far).state is State.PENDING
    clock.now = MONDAY_8.replace(month=12, day=2, hour=11, minute=59)
    assert access.time_out_pending(one) == 0
    clock.advance(M)
    assert access.time_out_pending(one) == 1
    assert grants.get(one, far).state is State.TIMED_OUT
    assert notifier.kinds(far).count(NoticeKind.TIMED_OUT) == 1


def test_an_unscheduled_request_still_times_out_after_the_role_timeout(
        runners: list[Context], clock: FakeClock) -> None:
    one = runners[0]
    waiting = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x")
    clock.advance(8 * H - M)
    assert access.time_out_pending(one) == 0
    clock.advance(M)
    assert access.time_out_pending(one) == 1
    assert grants.get(one, waiting.id or 0).state is State.TIMED_OUT


def test_a_window_cancelled_before_its_start_is_never_granted(
        runners: list[Context], granter: InMemoryGranter, notifier: RecordingNotifier,
        clock: FakeClock) -> None:
    one = runners[0]
    request_id = scheduled(one)
    access.approve(one, request_id, BOB)
    with pytest.raises(NotAuthorized):
        access.cancel(one, request_id, BOB)
    cancelled = access.cancel(one, request_id, ALICE)
    assert cancelled.state is State.CANCELLED
    with one.transaction() as uow:
        owed = uow.operations.get(request_id, OperationKind.GRANT)
        events = [e.action for e in uow.audit.events() if e.request_id == request_id]
    assert owed is not None and owed.state is OperationState.FAILED
    assert events == ["requested", "approved", "cancelled"]
    clock.now = MONDAY_8 + 2 * D
    assert race(runners, JOBS["retry"]) == [0, 0]
    assert granter.calls["granted"] == granter.calls["prepare"] == 0
    assert NoticeKind.ACTIVE not in notifier.kinds(request_id)


def test_a_started_or_unscheduled_approved_request_is_not_cancelled(
        runners: list[Context], clock: FakeClock, granter: InMemoryGranter) -> None:
    one = runners[0]
    request_id = scheduled(one, at="09:00Z")
    access.approve(one, request_id, BOB)
    clock.advance(H)
    with pytest.raises(InvalidTransition, match="its window started"):
        access.cancel(one, request_id, ALICE)
    assert grants.get(one, request_id).state is State.APPROVED
    assert JOBS["retry"](one) == 1
    assert grants.get(one, request_id).state is State.ACTIVE


@pytest.mark.parametrize(("change", "says"), [
    ("email", "the identity to grant changed from u0alice01@example.com to "
              "alice@elsewhere.example"),
    ("deactivated", "the account it was asked for is deactivated"),
    ("left the group", "may no longer ask for prod/edit"),
    ("became a guest", "u0alice01) is a guest of this workspace"),
    ("is a bot now", "u0alice01) is a bot or an app, not a person"),
    ("moved organisation", "u0alice01) is from another organisation"),
])
def test_at_the_start_the_grantee_is_checked_again(
        runners: list[Context], directory: StaticDirectory, granter: InMemoryGranter,
        notifier: RecordingNotifier, clock: FakeClock, change: str, says: str) -> None:
    one = runners[0]
    request_id = scheduled(one)
    access.approve(one, request_id, BOB)
    if change == "email":
        directory.emails[ALICE] = "alice@elsewhere.example"
    elif change == "deactivated":
        directory.deactivated.add(ALICE)
    elif change == "became a guest":
        directory.guests.add(ALICE)
    elif change == "is a bot now":
        directory.bots.add(ALICE)
    elif change == "moved organisation":
        directory.strangers.add(ALICE)
    else:
        directory.groups[DEVS] = set()
    clock.now = MONDAY_8.replace(month=12, day=1, hour=21)
    assert JOBS["retry"](one) == 1
    failed = grants.get(one, request_id)
    assert failed.state is State.FAILED
    assert failed.end_reason is not None and says in failed.end_reason
    assert granter.calls["granted"] == granter.calls["prepare"] == 0
    assert notifier.kinds(request_id).count(NoticeKind.FAILED) == 1


@pytest.mark.parametrize(("at", "error", "says"), [
    ("08:00Z", None, ""),  # HH:MM already passed today: tomorrow, fine
    ("2026-11-30T07:59Z", PolicyViolation, "is in the past"),
    ("2026-12-04T09:00Z", PolicyViolation, "more than 3d ahead"),
    ("whenever", Exception, "is not a time"),
])
def test_a_start_that_cannot_be_changes_nothing(runners: list[Context], at: str,
                                                error: type[Exception] | None,
                                                says: str) -> None:
    one = runners[0]
    if error is None:
        scheduled(one, at=at)
        return
    with pytest.raises(error, match=says):
        scheduled(one, at=at)
    with one.transaction() as uow:
        assert uow.requests.find() == [] and list(uow.audit.events()) == []


def test_a_window_restarts_survive_and_an_auto_approved_one_waits_too(
        engine: Engine, policy_config: Config, runners: list[Context],
        granter: InMemoryGranter, notifier: RecordingNotifier, directory: StaticDirectory,
        clock: FakeClock) -> None:
    request_id = scheduled(runners[0], role="view")
    assert grants.get(runners[0], request_id).state is State.APPROVED  # by the policy
    assert granter.calls["granted"] == 0
    restarted = make_context(engine, policy_config, granter, notifier, directory, clock,
                             worker="after-a-restart")
    clock.now = MONDAY_8.replace(month=12, day=1, hour=21, minute=1)
    assert JOBS["retry"](restarted) == 1
    assert grants.get(restarted, request_id).ends_at == MONDAY_8.replace(month=12, day=1, hour=23)


# --- escalation ---------------------------------------------------------------------------


def test_escalation_steps_add_their_approvers_once_each(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    request = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x")
    request_id = request.id or 0
    with pytest.raises(NotAuthorized, match="not an approver"):
        access.approve(one, request_id, CAROL)
    clock.advance(29 * M)
    assert race(runners, JOBS["escalate"]) == [0, 0]
    clock.advance(M)
    assert sorted(race(runners, JOBS["escalate"])) == [0, 1]
    assert race(runners, JOBS["escalate"]) == [0, 0]
    escalated = [n for n in notifier.notices if n.kind is NoticeKind.ESCALATED]
    assert [(n.audience.approvers if n.audience else ()) for n in escalated] == [(CAROL,)]
    assert grants.get(one, request_id).escalations_applied == 1
    clock.advance(90 * M)  # two hours: the leads' group, expanded to its members
    assert sorted(race(runners, JOBS["escalate"])) == [0, 1]
    escalated = [n for n in notifier.notices if n.kind is NoticeKind.ESCALATED]
    assert escalated[-1].audience is not None and escalated[-1].audience.approvers == (DAVE,)
    with one.transaction() as uow:
        steps = [e.details for e in uow.audit.events() if e.action == "escalated"]
    assert steps == [{"steps": [1], "approvers": [CAROL]},
                     {"steps": [2], "approvers": [LEADS]}]
    approved = access.approve(one, request_id, DAVE)  # a lead, added by the second step
    assert approved.state is State.ACTIVE


def test_a_directory_failing_mid_escalation_gives_the_step_back_and_spares_the_others(
        runners: list[Context], notifier: RecordingNotifier, directory: StaticDirectory,
        clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack fails while listing who a step adds (after the step was claimed): the step is
    given back, the other waiting requests still escalate, and the next pass tells it."""
    one = runners[0]
    first = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x").id or 0
    directory.groups[DEVS].add("U0ERIN005")
    directory.emails["U0ERIN005"] = "erin@example.com"
    second = access.file_request(one, "U0ERIN005", "prod", "edit", duration=H,
                                 reason="y").id or 0
    clock.advance(30 * M)
    listed, calls = directory.users, []

    def users(principals: Any) -> Any:
        calls.append(principals)
        if len(calls) == 1:  # the first request's step
            raise RuntimeError("Slack went away mid-pass")
        return listed(principals)

    monkeypatch.setattr(directory, "users", users)
    assert escalations.escalate_pending(one) == 1  # one failed, the other escalated
    assert escalations.escalate_pending(one) == 1  # the one given back, now told
    assert escalations.escalate_pending(one) == 0
    escalated = sorted(n.request.id or 0 for n in notifier.notices
                       if n.kind is NoticeKind.ESCALATED)
    assert escalated == sorted([first, second])
    assert all(grants.get(one, i).escalations_applied == 1 for i in (first, second))


def test_steps_missed_while_the_bot_was_down_apply_together(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    request = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x")
    clock.advance(3 * H)
    assert escalations.escalate_pending(one) == 1
    (notice,) = [n for n in notifier.notices if n.kind is NoticeKind.ESCALATED]
    assert notice.audience is not None and notice.audience.approvers == (CAROL, DAVE)
    assert grants.get(one, request.id or 0).escalations_applied == 2


def test_a_decided_or_timed_out_request_escalates_no_more(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    decided = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x")
    access.deny(one, decided.id or 0, BOB, "not now")
    clock.advance(9 * H)
    assert escalations.escalate_pending(one) == 0
    assert NoticeKind.ESCALATED not in notifier.kinds()


# --- re-notification ----------------------------------------------------------------------


def test_reminders_back_off_once_each_across_replicas_until_the_deadline(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    request = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x")
    sent_at = []
    for _ in range(10 * 6):  # every ten minutes, past the 8 h timeout
        clock.advance(10 * M)
        if sum(race(runners, JOBS["remind"])):
            sent_at.append(clock.now - MONDAY_8)
    assert sent_at == [1 * H, 3 * H, 7 * H]  # 1 h, then 2 h later, then 4 h; 15 h is past 8 h
    assert grants.get(one, request.id or 0).renotified == 3
    with one.transaction() as uow:
        reminded = [e.details for e in uow.audit.events() if e.action == "renotified"]
    assert reminded == [{"reminder": 1}, {"reminder": 2}, {"reminder": 3}]


def test_a_scheduled_request_is_reminded_until_its_window_ends(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    request_id = scheduled(one, at="2026-12-01T09:00Z", duration=2 * H)  # ends in 27 h
    sent = 0
    for _ in range(30):
        clock.advance(H)
        sent += reminders.renotify_pending(one)
    assert sent == 4  # 1 h, 3 h, 7 h, 15 h; 31 h is past the window's end
    assert grants.get(one, request_id).renotified == 4


def test_a_reminder_slack_could_not_take_is_tried_again(
        runners: list[Context], notifier: RecordingNotifier, clock: FakeClock) -> None:
    one = runners[0]
    request = access.file_request(one, ALICE, "prod", "edit", duration=H, reason="x")
    original = notifier.notify
    calls = {"n": 0}

    def busy(notice: Notice) -> Any:
        if notice.kind is NoticeKind.STILL_PENDING:
            calls["n"] += 1
            if calls["n"] == 1:
                raise Undeliverable("Slack is rate-limiting", recipient=BOB,
                                    error="ratelimited", kind=Undeliverable.TEMPORARY)
        return original(notice)

    notifier.notify = busy  # type: ignore[method-assign]
    clock.advance(H)
    assert reminders.renotify_pending(one) == 0
    assert grants.get(one, request.id or 0).renotified == 0  # given back
    assert reminders.renotify_pending(one) == 1
    assert grants.get(one, request.id or 0).renotified == 1
    assert reminders.renotify_pending(one) == 0


def test_the_escalate_job_is_registered_with_the_others() -> None:
    assert JOBS["escalate"] is escalations.escalate_pending
