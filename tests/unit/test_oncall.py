"""On-call auto-approval, the pure rule: when being on call approves, and what the requester
is told when it does not (SPEC.md, Integrations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import lifecycle
from bot.domain.errors import InvalidTransition
from bot.domain.model import POLICY_ACTOR, AccessRequest, Approval, Decision, State
from bot.domain.oncall import (
    OnCallAnswer,
    OnCallPolicy,
    OnCallStatus,
    OnCallTargets,
    OpsgenieTargets,
    PagerDutyTargets,
    combine,
    decide,
    evaluate,
    evaluate_request,
    on_call_approval,
)

TARGETS = OnCallTargets(pagerduty=PagerDutyTargets(("PPLATF1",)),
                        opsgenie=OpsgenieTargets(("platform",)))
POLICY = OnCallPolicy(TARGETS)  # up to 4h by default
H = timedelta(hours=1)

ON = OnCallAnswer.on_call("PagerDuty", "escalation policy Platform (PPLATF1), level 1")
OFF = OnCallAnswer.not_on_call("Opsgenie", "not on call in schedule platform")
LEVEL = OnCallAnswer.level_not_counted("PagerDuty", [3], [1, 2])
DOWN = OnCallAnswer.unknown("PagerDuty", "the service failed (503 Service Unavailable)")
SLOW = OnCallAnswer.unknown("Opsgenie", "no answer within 3s")


@pytest.mark.parametrize(("duration", "answer", "approved", "told"), [
    (H, ON, True, "on call: PagerDuty: escalation policy Platform (PPLATF1), level 1"),
    (4 * H, ON, True, "on call"),
    (4 * H + timedelta(minutes=1), ON, False, "4h1m is longer than the 4h that being on call"),
    (H, OFF, False, "you are not on call (Opsgenie: not on call in schedule platform)"),
    (H, LEVEL, False, "you are on call only at level 3; this role counts level 1 or 2 "
                      "(PagerDuty)"),
    (H, DOWN, False, "could not be checked (PagerDuty: the service failed (503"),
    (H, SLOW, False, "could not be checked (Opsgenie: no answer within 3s)"),
    (H, None, False, "could not be checked"),
], ids=["on call", "on call at the limit", "too long", "not on call", "level",
        "service down", "service slow", "not asked"])
def test_the_rule(duration: timedelta, answer: OnCallAnswer | None, approved: bool,
                  told: str) -> None:
    decision = decide(POLICY, duration, answer)
    assert decision.approved is approved
    assert told in decision.detail


@pytest.mark.parametrize(("answers", "status"), [
    ([ON, DOWN], OnCallStatus.ON_CALL),
    ([DOWN, ON], OnCallStatus.ON_CALL),
    ([OFF, DOWN], OnCallStatus.UNKNOWN),  # the service that failed might have said yes
    ([OFF, LEVEL], OnCallStatus.LEVEL_NOT_COUNTED),
    ([OFF], OnCallStatus.NOT_ON_CALL),
    ([], OnCallStatus.UNKNOWN),
], ids=["on call wins", "in any order", "doubt beats no", "level beats no", "no", "nothing"])
def test_answers_of_several_services_combine(answers: list[OnCallAnswer],
                                             status: OnCallStatus) -> None:
    assert combine(answers).status is status


def test_combined_doubt_names_every_service() -> None:
    both = combine([DOWN, SLOW])
    assert both.service == "PagerDuty and Opsgenie"
    assert "503" in both.detail and "no answer within 3s" in both.detail


class Asked:
    def __init__(self, answer: OnCallAnswer | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[str, OnCallTargets]] = []

    def check(self, email: str, targets: OnCallTargets) -> OnCallAnswer:
        self.asked.append((email, targets))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(("service", "email", "duration", "approved", "asked", "told"), [
    (Asked(ON), "alice@example.com", H, True, True, "on call"),
    (Asked(ON), "alice@example.com", 5 * H, False, False, "longer than the 4h"),
    (Asked(ON), None, H, False, False, "no email address is known for you"),
    (None, "alice@example.com", H, False, False, "no on-call service is configured"),
    (Asked(RuntimeError("boom")), "alice@example.com", H, False, True,
     "the check failed (RuntimeError)"),
], ids=["asked", "too long: not asked", "no email", "no service", "a service that raised"])
def test_evaluate_asks_only_when_it_can_matter(service: Asked | None, email: str | None,
                                               duration: timedelta, approved: bool,
                                               asked: bool, told: str) -> None:
    decision = evaluate(service, POLICY, email, duration)
    assert decision.approved is approved
    assert told in decision.detail
    assert bool(service and service.asked) is asked
    if service and service.asked:
        assert service.asked == [("alice@example.com", TARGETS)]


NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def request(**changes: object) -> AccessRequest:
    base = AccessRequest(requester_id="U0ALICE01", cluster="staging", role="edit", duration=H,
                         reason="outage", subject="alice@example.com", created_at=NOW)
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.mark.parametrize(("changes", "approved", "asked", "told"), [
    ({}, True, True, "on call: PagerDuty"),
    ({"window_start": NOW + 2 * H}, False, False,
     "access in a scheduled window is not approved by being on call now"),
    ({"grantee_id": "U0BOB0002"}, False, False,
     "access for someone else is not approved by being on call"),
    ({"duration": 5 * H}, False, False, "5h is longer than the 4h"),
], ids=["now, for oneself", "a scheduled window", "for someone else", "too long"])
def test_a_filed_request_is_vouched_for_only_now_and_for_the_person_on_call(
        changes: dict[str, object], approved: bool, asked: bool, told: str) -> None:
    service = Asked(ON)
    decision = evaluate_request(service, POLICY, request(**changes), "alice@example.com")
    assert (decision.approved, bool(service.asked)) == (approved, asked)
    assert told in decision.detail


def test_approval_by_being_on_call_is_the_policys_and_recognisable() -> None:
    filed = request()
    assert on_call_approval(filed) is None
    lifecycle.approve_on_call(filed, NOW, "on call: PagerDuty: level 1")
    assert filed.state is State.APPROVED and filed.approved_by_policy
    assert filed.approvals[0].approver_id == POLICY_ACTOR
    assert on_call_approval(filed) == "on-call: flagged for review; on call: PagerDuty: level 1"
    with pytest.raises(InvalidTransition):
        lifecycle.approve_on_call(filed, NOW, "again")
    other = request(approvals=[Approval(POLICY_ACTOR, Decision.APPROVE, NOW,
                                        "auto-approved up to 2h")])
    assert on_call_approval(other) is None
