"""On-call auto-approval: who is on call counts as approved by policy, for a short while.

A role may name PagerDuty escalation policies and schedules (with the escalation levels that
count) and Opsgenie schedules. A requester who is on call in one of them right now, matched by
email, is approved by the policy for up to the role's ``on_call_max_duration`` (4 hours unless
configured). Anything else goes to ordinary approval with the reason the requester is told:
the request is longer than that, the person is not on call, is on call only at a level that
does not count, or the on-call service could not say (down, slow, refused the token). Doubt
never approves.

This module holds the vocabulary and the rule; the services are asked through the
:class:`OnCall` port (``bot.adapters.oncall``). The contract is SPEC.md, "Integrations".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from bot.domain.durations import format_duration
from bot.domain.model import POLICY_ACTOR, AccessRequest

DEFAULT_MAX_DURATION = timedelta(hours=4)
"""``on_call_max_duration`` when a role does not set it."""
DEFAULT_LEVELS = frozenset({1})
"""PagerDuty escalation levels that count when a role does not list ``levels``: the first."""
ON_CALL_RULE = "on-call"
"""The audit ``rule`` of an approval by being on call, and how its approval comment starts."""


@dataclass(frozen=True)
class PagerDutyTargets:
    """Where being on call counts, in PagerDuty.

    ``levels`` applies to on-calls through ``escalation_policies``; a person on call in one of
    ``schedules`` counts whatever level of a policy the schedule sits at, since the schedule
    was named on purpose."""

    escalation_policies: tuple[str, ...] = ()
    """Escalation policy IDs (``PABC123``)."""
    schedules: tuple[str, ...] = ()
    """Schedule IDs (``PSCH123``)."""
    levels: frozenset[int] = DEFAULT_LEVELS
    """Escalation levels (1 = first) that count."""


@dataclass(frozen=True)
class OpsgenieTargets:
    schedules: tuple[str, ...]
    """Schedule names or IDs (a UUID is taken as an ID, anything else as a name)."""


@dataclass(frozen=True)
class OnCallTargets:
    """Every place a role counts; at least one service is named."""

    pagerduty: PagerDutyTargets | None = None
    opsgenie: OpsgenieTargets | None = None


class OnCallStatus(enum.Enum):
    ON_CALL = "on call"
    NOT_ON_CALL = "not on call"
    LEVEL_NOT_COUNTED = "level does not count"
    """On call, but only at escalation levels the role does not count."""
    UNKNOWN = "unknown"
    """The service failed, was slow, refused the credentials or is not configured."""


@dataclass(frozen=True)
class OnCallAnswer:
    """One service's answer (or several combined, see :func:`combine`).

    ``service`` is ``PagerDuty`` or ``Opsgenie`` (or both, joined); ``detail`` says where the
    person is on call (``escalation policy Platform (PABC123), level 1``) or why not, in words
    for the requester and the audit log; never a token."""

    status: OnCallStatus
    service: str
    detail: str

    @classmethod
    def on_call(cls, service: str, where: str) -> OnCallAnswer:
        return cls(OnCallStatus.ON_CALL, service, where)

    @classmethod
    def not_on_call(cls, service: str, detail: str) -> OnCallAnswer:
        return cls(OnCallStatus.NOT_ON_CALL, service, detail)

    @classmethod
    def level_not_counted(cls, service: str, found: Iterable[int],
                          counted: Iterable[int]) -> OnCallAnswer:
        return cls(OnCallStatus.LEVEL_NOT_COUNTED, service,
                   f"on call only at level {_levels(found)}; this role counts level "
                   f"{_levels(counted)}")

    @classmethod
    def unknown(cls, service: str, reason: str) -> OnCallAnswer:
        return cls(OnCallStatus.UNKNOWN, service, reason)

    @property
    def is_on_call(self) -> bool:
        return self.status is OnCallStatus.ON_CALL

    def __str__(self) -> str:
        return f"{self.service}: {self.detail}"


def _levels(levels: Iterable[int]) -> str:
    ordered = sorted(set(levels))
    if len(ordered) <= 1:
        return "".join(map(str, ordered))
    return ", ".join(map(str, ordered[:-1])) + f" or {ordered[-1]}"


_PRECEDENCE = (OnCallStatus.ON_CALL, OnCallStatus.UNKNOWN, OnCallStatus.LEVEL_NOT_COUNTED,
               OnCallStatus.NOT_ON_CALL)


def combine(answers: Iterable[OnCallAnswer]) -> OnCallAnswer:
    """The answer of several services together: on call where any says so for certain;
    else unknown where any could not say (a service that failed might have said yes); else
    on call at a level that does not count; else not on call. The details of the answers of
    the winning kind are joined. No answer at all is unknown."""
    given = list(answers)
    for status in _PRECEDENCE:
        same = [a for a in given if a.status is status]
        if same:
            if len(same) == 1:
                return same[0]
            return OnCallAnswer(status, " and ".join(dict.fromkeys(a.service for a in same)),
                                "; ".join(str(a) for a in same))
    return OnCallAnswer.unknown("on-call", "no on-call service is configured for this role")


class OnCall(Protocol):
    """Asks the on-call services whether a person is on call right now.

    Implementations answer within a few seconds and never raise: a failure, a timeout or a
    refused credential is an :attr:`OnCallStatus.UNKNOWN` answer with the reason."""

    def check(self, email: str, targets: OnCallTargets) -> OnCallAnswer: ...


@dataclass(frozen=True)
class OnCallPolicy:
    """A role's ``auto_approve_on_call`` and ``on_call_max_duration``."""

    targets: OnCallTargets
    max_duration: timedelta = DEFAULT_MAX_DURATION

    def asks(self, duration: timedelta) -> bool:
        """Whether the services are worth asking: not for a request longer than allowed."""
        return duration <= self.max_duration


@dataclass(frozen=True)
class OnCallDecision:
    """What to do with a request of a role with on-call auto-approval.

    ``approved``: approve it by policy (audit rule ``on-call``, ``detail`` says where the
    person is on call). Otherwise it goes to the approvers as usual and ``detail`` is the
    reason the requester is told."""

    approved: bool
    detail: str
    answer: OnCallAnswer | None = None
    """The services' answer; None when they were not asked (the request was too long, or
    nobody knows the requester's email)."""


def decide(policy: OnCallPolicy, duration: timedelta,
           answer: OnCallAnswer | None) -> OnCallDecision:
    """The rule: approved by policy when ``duration`` is within the policy's maximum and the
    services said for certain that the person is on call; otherwise ordinary approval, with
    the reason. ``answer`` is None when the services were not asked."""
    limit = format_duration(policy.max_duration)
    if duration > policy.max_duration:
        return OnCallDecision(False, f"{format_duration(duration)} is longer than the {limit} "
                                     "that being on call approves by itself", answer)
    if answer is None:
        return OnCallDecision(False, "whether you are on call could not be checked", None)
    if answer.is_on_call:
        return OnCallDecision(True, f"on call: {answer}", answer)
    if answer.status is OnCallStatus.UNKNOWN:
        return OnCallDecision(False, f"whether you are on call could not be checked ({answer})",
                              answer)
    if answer.status is OnCallStatus.LEVEL_NOT_COUNTED:
        return OnCallDecision(False, f"you are {answer.detail} ({answer.service})", answer)
    return OnCallDecision(False, f"you are not on call ({answer})", answer)


def evaluate(on_call: OnCall | None, policy: OnCallPolicy, email: str | None,
             duration: timedelta) -> OnCallDecision:
    """Ask ``on_call`` about ``email`` when the rule needs it, then :func:`decide`. Nobody to
    ask, no email known, or an implementation that raised despite its contract all mean
    ordinary approval with the reason."""
    if not policy.asks(duration):
        return decide(policy, duration, None)
    if on_call is None:
        answer = OnCallAnswer.unknown("on-call", "no on-call service is configured")
    elif not email:
        answer = OnCallAnswer.unknown("on-call", "no email address is known for you")
    else:
        try:
            answer = on_call.check(email, policy.targets)
        except Exception as error:  # the port never raises; if it does, that is doubt
            answer = OnCallAnswer.unknown("on-call", f"the check failed ({type(error).__name__})")
    return decide(policy, duration, answer)


def evaluate_request(on_call: OnCall | None, policy: OnCallPolicy, request: AccessRequest,
                     email: str | None) -> OnCallDecision:
    """:func:`evaluate` for a filed request. Being on call now vouches only for access that
    starts now, for the person on call: a scheduled window, or a request for someone else,
    goes to the approvers without asking the services."""
    if request.window_start is not None:
        return OnCallDecision(False, "access in a scheduled window is not approved by being "
                                     "on call now")
    if request.on_behalf:
        return OnCallDecision(False, "access for someone else is not approved by being on call")
    return evaluate(on_call, policy, email, request.duration)


def on_call_approval(request: AccessRequest) -> str | None:
    """The policy's approval comment when ``request`` was approved because the requester was
    on call (``on-call: flagged for review; on call: PagerDuty: …``); None otherwise."""
    for approval in request.approvals:
        if approval.approver_id == POLICY_ACTOR and approval.comment.startswith(
                f"{ON_CALL_RULE}:"):
            return approval.comment
    return None
