"""Escalation steps and reminders with back-off, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import escalation, lifecycle
from bot.domain.errors import NotAuthorized
from bot.domain.model import AccessRequest, Actor, State
from bot.domain.policy import EscalationStep, RolePolicy

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
H, M = timedelta(hours=1), timedelta(minutes=1)
ALICE, BOB = Actor("U0ALICE"), Actor("U0BOB")
LEAD, ONCALL = Actor("U0LEAD"), Actor("U0ONCALL", groups=frozenset({"S0ONCALL"}))
STEPS = (EscalationStep(30 * M, frozenset({"U0LEAD"})),
         EscalationStep(2 * H, frozenset({"S0ONCALL", "U0LEAD", "U0ALICE"})))
POLICY = RolePolicy(cluster="prod", role="edit", approvers=frozenset({"U0BOB"}),
                    cluster_approvers=frozenset(), max_duration=8 * H, default_duration=H,
                    pending_timeout=4 * H, escalation=STEPS)


def pending(**changes: object) -> AccessRequest:
    request = lifecycle.file_request(policy=POLICY, requester=ALICE, subject="s", duration=H,
                                     reason="x", now=NOW)
    for key, value in changes.items():
        setattr(request, key, value)
    return request


@pytest.mark.parametrize(("waited", "applied", "due"), [
    (29 * M, 0, 0),
    (30 * M, 0, 1),
    (2 * H, 0, 2),           # a pass that missed the first step applies both at once
    (2 * H, 1, 1),
    (2 * H, 2, 0),           # each step once
    (4 * H, 0, 0),           # past the deadline: the timeout pass closes it
])
def test_steps_due_while_pending(waited: timedelta, applied: int, due: int) -> None:
    request = pending(escalations_applied=applied)
    assert escalation.due_steps(request, POLICY, NOW + waited) == STEPS[applied:applied + due]


@pytest.mark.parametrize("state", [s for s in State if s is not State.PENDING])
def test_no_step_for_a_decided_request(state: State) -> None:
    assert escalation.due_steps(pending(state=state), POLICY, NOW + 3 * H) == ()


def test_each_step_adds_its_new_approvers_once_never_the_requester() -> None:
    request = pending()
    assert escalation.escalate(request, POLICY, NOW + 10 * M) == frozenset()
    assert escalation.escalate(request, POLICY, NOW + 31 * M) == {"U0LEAD"}
    assert escalation.escalate(request, POLICY, NOW + 40 * M) == frozenset()
    assert escalation.escalate(request, POLICY, NOW + 2 * H) == {"S0ONCALL"}
    assert request.escalations_applied == 2
    assert escalation.approvers_of(request, POLICY) == {"U0BOB", "U0LEAD", "S0ONCALL",
                                                        "U0ALICE"}


@pytest.mark.parametrize(("applied", "actor", "allowed"), [
    (0, BOB, True), (0, LEAD, False), (0, ONCALL, False),
    (1, LEAD, True), (1, ONCALL, False),
    (2, ONCALL, True),
    (2, ALICE, False),       # a step naming the requester does not let them decide
])
def test_escalated_approvers_may_decide(applied: int, actor: Actor, allowed: bool) -> None:
    request = pending(escalations_applied=applied)
    if allowed:
        assert lifecycle.approve(request, actor, POLICY, NOW + 3 * H)
        return
    with pytest.raises(NotAuthorized):
        lifecycle.approve(request, actor, POLICY, NOW + 3 * H)


@pytest.mark.parametrize(("waited", "step"), [
    (3 * H, 0), (4 * H, 1), (12 * H - M, 1), (12 * H, 2), (28 * H - M, 2), (28 * H, 3),
    (60 * H, 4)])
def test_each_reminder_interval_twice_the_one_before(waited: timedelta, step: int) -> None:
    assert escalation.renotify_step(waited, 4 * H) == step


LONG = RolePolicy(**{**POLICY.__dict__, "pending_timeout": 24 * H})


@pytest.mark.parametrize(("waited", "renotified", "due"), [
    (3 * H, 0, 0),
    (4 * H, 0, 1),
    (5 * H, 1, 0),           # sent already
    (12 * H, 1, 2),
    (30 * H, 0, 0),          # past the timeout
    (20 * H, 0, 2),          # missed while down: only the latest
])
def test_reminders_back_off_until_the_deadline(waited: timedelta, renotified: int,
                                               due: int) -> None:
    request = pending(renotified=renotified)
    assert escalation.renotify_due(request, LONG, 4 * H, NOW + waited) == due
    if due:
        escalation.mark_renotified(request, due)
        assert escalation.renotify_due(request, LONG, 4 * H, NOW + waited) == 0
        assert escalation.renotify_at(request, 4 * H) > NOW + waited


def test_next_reminder_times() -> None:
    request = pending()
    times = []
    for step in (1, 2, 3):
        times.append(escalation.renotify_at(request, 4 * H) - NOW)
        escalation.mark_renotified(request, step)
    assert times == [4 * H, 12 * H, 28 * H]
