"""Who is next on a request nobody decided: escalation steps and reminders with back-off.

A role's ``escalation`` is a list of steps ``{after, approvers}``: once a request has waited
``after`` since it was filed and is still pending, the step's approvers join the ones who may
decide, and are told. Steps apply in order, each once; the request counts how many it applied.

Approvers are reminded of a waiting request after ``renotify_after``, then after twice that
again, and so on (4 h, 12 h, 28 h… for 4 h) until the request's deadline.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import takewhile

from bot.domain.model import AccessRequest, Actor, State
from bot.domain.policy import EscalationStep, RolePolicy


def pending_deadline(request: AccessRequest, policy: RolePolicy) -> datetime:
    """When a request still pending times out: a scheduled window's end (it is approved
    ahead, however far ahead it starts), else ``pending_timeout`` after it was filed."""
    return request.window_end or request.created_at + policy.pending_timeout


def due_steps(request: AccessRequest, policy: RolePolicy,
              now: datetime) -> tuple[EscalationStep, ...]:
    """The steps not yet applied whose time has come at ``now``, in order; none once the
    request is decided or past its deadline."""
    if request.state is not State.PENDING or now >= pending_deadline(request, policy):
        return ()
    waited = now - request.created_at
    remaining = policy.escalation[request.escalations_applied:]
    return tuple(takewhile(lambda step: waited >= step.after, remaining))


def approvers_of(request: AccessRequest, policy: RolePolicy) -> frozenset[str]:
    """Who may decide on ``request`` now: the role's approvers and those of the steps it
    applied (Slack user and user group IDs)."""
    added = [step.approvers for step in policy.escalation[:request.escalations_applied]]
    return policy.approvers.union(*added)


def may_decide(request: AccessRequest, policy: RolePolicy, actor: Actor) -> bool:
    return actor.among(approvers_of(request, policy))


def escalate(request: AccessRequest, policy: RolePolicy, now: datetime) -> frozenset[str]:
    """Apply the steps due at ``now``; the audience they add, to be told: their approvers
    who could not decide before, without the requester and the grantee. Empty when no step is
    due (or when the due steps add nobody new, which still counts them applied)."""
    steps = due_steps(request, policy, now)
    if not steps:
        return frozenset()
    before = approvers_of(request, policy)
    request.escalations_applied += len(steps)
    added = frozenset().union(*(step.approvers for step in steps))
    return added - before - request.parties


def renotify_step(waited: timedelta, after: timedelta) -> int:
    """Which reminder a request that has ``waited`` is due: 0 before ``after``, 1 from
    ``after``, 2 from ``3 × after``, 3 from ``7 × after``, … (each interval twice the one
    before: reminder ``n`` is due at ``(2ⁿ - 1) × after``)."""
    if waited < after:
        return 0
    step, due = 1, after
    while waited >= due + after * (1 << step):
        due += after * (1 << step)
        step += 1
    return step


def renotify_at(request: AccessRequest, after: timedelta) -> datetime:
    """When the next reminder of ``request`` is due, after the :attr:`renotified` sent."""
    return request.created_at + after * ((1 << (request.renotified + 1)) - 1)


def renotify_due(request: AccessRequest, policy: RolePolicy, after: timedelta,
                 now: datetime) -> int:
    """The reminder to send at ``now`` (its number), or 0 when none is: the request is
    decided, past its deadline, or the next reminder's time has not come. Reminders missed
    while the bot was down are not sent one by one: only the latest is."""
    if request.state is not State.PENDING or now >= pending_deadline(request, policy):
        return 0
    step = renotify_step(now - request.created_at, after)
    return step if step > request.renotified else 0


def mark_renotified(request: AccessRequest, step: int) -> None:
    """Reminder ``step`` went out (see :func:`renotify_due`)."""
    request.renotified = max(request.renotified, step)
