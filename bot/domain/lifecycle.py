"""The request lifecycle: every allowed transition, every refusal with its reason.

::

    pending ──approve (quorum)──▶ approved ──provisioned──▶ active ──▶ expired
       │                            │                        └──revoke──▶ revoked
       ├──deny──▶ denied            ├──permanent error──▶ failed
       ├──cancel──▶ cancelled ◀─────┘ cancel (a scheduled window not yet started)
       └──no decision in time──▶ timed_out

The functions here check who acts and what the policy says, then move the request. They mutate
the request they are given and never touch storage, a backend or a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from bot.domain import eligibility, escalation, reasons, windows
from bot.domain.durations import format_duration
from bot.domain.errors import (
    DomainError,
    InvalidInput,
    InvalidTransition,
    NotAuthorized,
    PolicyViolation,
)
from bot.domain.model import (
    POLICY_ACTOR,
    WAITING_STATES,
    AccessRequest,
    Actor,
    Approval,
    Decision,
    Kind,
    State,
)
from bot.domain.oncall import ON_CALL_RULE
from bot.domain.policy import RolePolicy

MIN_DURATION = timedelta(minutes=10)
"""Kubernetes refuses client certificates shorter than 600 seconds; no grant is shorter."""


class Event(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    CANCEL = "cancel"
    TIME_OUT = "time out"
    PROVISION = "provision"
    FAIL = "fail"
    EXPIRE = "expire"
    REVOKE = "revoke"

    @property
    def passive(self) -> str:
        """How the refusal says it: "it cannot *be approved* now"."""
        return {"approve": "be approved", "deny": "be denied", "cancel": "be cancelled",
                "provision": "be activated", "revoke": "be revoked"}.get(self.value, self.value)


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.PENDING, Event.APPROVE): State.APPROVED,
    (State.PENDING, Event.DENY): State.DENIED,
    (State.PENDING, Event.CANCEL): State.CANCELLED,
    (State.PENDING, Event.TIME_OUT): State.TIMED_OUT,
    (State.APPROVED, Event.PROVISION): State.ACTIVE,
    (State.APPROVED, Event.FAIL): State.FAILED,
    (State.APPROVED, Event.CANCEL): State.CANCELLED,
    (State.ACTIVE, Event.EXPIRE): State.EXPIRED,
    (State.ACTIVE, Event.REVOKE): State.REVOKED,
}


def next_state(request: AccessRequest, event: Event) -> State:
    """The state ``event`` leads to, or :class:`InvalidTransition` saying why it cannot happen."""
    target = TRANSITIONS.get((request.state, event))
    if target is None:
        state = request.state.value.replace("_", " ")
        when = "any more" if request.state.is_final else "now"
        raise InvalidTransition(f"Request {request.label} is {state}: it cannot {event.passive} "
                                f"{when}.")
    return target


def _move(request: AccessRequest, event: Event) -> None:
    request.state = next_state(request, event)


# --- filing -------------------------------------------------------------------------------


def check_duration(policy: RolePolicy, duration: timedelta) -> None:
    if duration < MIN_DURATION:
        raise PolicyViolation(
            f"{format_duration(duration)} is too short: access lasts at least "
            f"{format_duration(MIN_DURATION)}."
        )
    if duration > policy.max_duration:
        raise PolicyViolation(
            f"{format_duration(duration)} is longer than {policy.cluster}/{policy.role} allows: "
            f"ask for {format_duration(policy.max_duration)} or less."
        )


def reason_required(policy: RolePolicy, *, break_glass: bool = False) -> bool:
    """A request must say why when its role says so, and always when it breaks the glass."""
    return break_glass or policy.require_reason


def namespace_to_choose(policy: RolePolicy, namespace: str | None) -> bool:
    """True when the requester has yet to name a namespace: the role has several and none was
    given (a role with one namespace takes it by default)."""
    return namespace is None and len(policy.namespaces) > 1


def is_complete(
    policy: RolePolicy, *, reason: str, namespace: str | None, break_glass: bool = False,
) -> bool:
    """True when a request for ``policy``'s role lacks nothing the requester still has to say:
    a reason where :func:`reason_required`, a namespace where :func:`namespace_to_choose`.
    Whether what was said is *allowed* is :func:`file_request`'s question (and
    :func:`field_errors`' for a form)."""
    return not ((reason_required(policy, break_glass=break_glass) and not reason.strip())
                or namespace_to_choose(policy, namespace))


def _check_reason(policy: RolePolicy, reason: str, *, required: bool) -> str:
    reason = reason.strip()
    if not reason and reason_required(policy, break_glass=required):
        raise PolicyViolation(
            f"{policy.cluster}/{policy.role} needs a reason: say why you need access, "
            "for example `deploy hotfix for INC-123`."
        )
    if len(reason) > 2000:
        raise InvalidInput("The reason is too long: keep it under 2000 characters.")
    reasons.check_reason_pattern(policy, reason)
    return reason


def check_namespace(policy: RolePolicy, namespace: str | None) -> str | None:
    """The namespace a request of ``policy``'s role is for (its only one when left out);
    :class:`InvalidInput` with the choices for one it does not have."""
    if not policy.namespaced:
        if namespace:
            raise InvalidInput(
                f"{policy.cluster}/{policy.role} is cluster-wide: leave the namespace out."
            )
        return None
    if namespace is None and len(policy.namespaces) == 1:
        return policy.namespaces[0]
    if namespace not in policy.namespaces:
        choices = ", ".join(policy.namespaces)
        what = f"'{namespace}' is not a namespace of" if namespace else "Name a namespace for"
        raise InvalidInput(f"{what} {policy.cluster}/{policy.role}: choose one of {choices}.")
    return namespace


def field_errors(
    policy: RolePolicy, *, duration: timedelta, reason: str, namespace: str | None,
    break_glass: bool = False,
) -> dict[str, str]:
    """What is wrong with each field of a request form, by field name; empty when all is well."""
    checks: dict[str, Callable[[], object]] = {
        "duration": lambda: check_duration(policy, duration),
        "reason": lambda: _check_reason(policy, reason, required=break_glass),
        "namespace": lambda: check_namespace(policy, namespace),
    }
    errors: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
        except DomainError as error:
            errors[name] = error.message
    return errors


def file_request(
    *,
    policy: RolePolicy,
    requester: Actor,
    subject: str,
    duration: timedelta | None,
    reason: str,
    now: datetime,
    namespace: str | None = None,
    break_glass: bool = False,
    user_csr: str | None = None,
    grantee: Actor | None = None,
    window_start: datetime | None = None,
) -> AccessRequest:
    """A new access request, approved at once where the policy says so.

    Break-glass and auto-approve requests come back ``approved`` by the policy itself.
    ``grantee`` (their user groups resolved) receives the access when someone asks on their
    behalf (:func:`bot.domain.eligibility.check_request_for`); ``window_start`` schedules it
    (:func:`bot.domain.windows.schedule` parsed it; it is checked again here).
    """
    grantee = grantee or requester
    eligibility.check_request_for(policy, requester, grantee)
    duration = duration if duration is not None else policy.default_duration
    check_duration(policy, duration)
    if window_start is not None:
        if break_glass:
            raise PolicyViolation("Break-glass starts now: leave --at out, or ask for approval.")
        windows.check_start(window_start, now=now, max_ahead=policy.max_schedule_ahead)
    if break_glass:
        eligibility.check_not_break_glass_for_others(requester, grantee, policy)
    if user_csr and not policy.allow_own_csr:
        raise PolicyViolation(
            f"{policy.cluster}/{policy.role} issues its own keys: leave the CSR out."
        )
    if break_glass and not policy.break_glass:
        raise PolicyViolation(
            f"{policy.cluster}/{policy.role} has no break-glass: ask for approval instead."
        )
    request = AccessRequest(
        requester_id=requester.user_id,
        cluster=policy.cluster,
        role=policy.role,
        namespace=check_namespace(policy, namespace),
        duration=duration,
        reason=_check_reason(policy, reason, required=break_glass),
        subject=subject,
        created_at=now,
        break_glass=break_glass,
        user_csr=user_csr or None,
        grantee_id=grantee.user_id if grantee.user_id != requester.user_id else None,
        window_start=window_start,
    )
    if break_glass:
        _approve_by_policy(request, now, "break-glass: self-activated, flagged for review")
    elif policy.auto_approves(duration):
        limit = format_duration(policy.auto_approve_up_to or duration)
        _approve_by_policy(request, now, f"auto-approved up to {limit}")
    return request


def _approve_by_policy(request: AccessRequest, now: datetime, comment: str) -> None:
    request.approvals.append(Approval(POLICY_ACTOR, Decision.APPROVE, now, comment))
    request.approved_by_policy = True
    request.decided_at = now
    _move(request, Event.APPROVE)


# --- decisions ----------------------------------------------------------------------------


def _check_decider(request: AccessRequest, actor: Actor, policy: RolePolicy, verb: str) -> None:
    # Who may decide first: someone who may not learns nothing of where the request stands.
    if actor.user_id == request.requester_id:
        raise NotAuthorized(f"You cannot {verb} your own request {request.label}.")
    if actor.user_id == request.grantee:
        raise NotAuthorized(
            f"You cannot {verb} request {request.label}: it asks for access for you."
        )
    if not escalation.may_decide(request, policy, actor):
        raise NotAuthorized(
            f"You are not an approver for {policy.cluster}/{policy.role}, "
            f"so you cannot {verb} request {request.label}."
        )
    next_state(request, Event.APPROVE if verb == "approve" else Event.DENY)
    if any(a.approver_id == actor.user_id for a in request.approvals):
        raise InvalidTransition(f"You already decided on request {request.label}.")


def check_deny(request: AccessRequest, actor: Actor, policy: RolePolicy,
               reason: str | None = None) -> None:
    """Refuse unless ``actor`` may deny ``request`` now and, when ``reason`` is given, unless it
    says why: what :func:`deny` checks, so that the Deny form opens (without a reason) and is
    accepted (with one) only for those who may use it."""
    _check_decider(request, actor, policy, "deny")
    if reason is not None and not reason.strip():
        raise InvalidInput("Say why you deny it, so the requester knows what to change.")


def check_approved_duration(request: AccessRequest, duration: timedelta) -> None:
    """Refuse an approval "for less" that is not: longer than asked, or too short to grant."""
    if duration <= timedelta():
        raise InvalidInput(
            f"{format_duration(duration)} is no time at all: approve for a duration like 1h, "
            "or leave --for out to approve what was asked."
        )
    if duration > request.duration:
        raise PolicyViolation(
            f"Request {request.label} asks for {format_duration(request.duration)}: approve "
            f"for that or less, not {format_duration(duration)}."
        )
    if duration < MIN_DURATION:
        raise PolicyViolation(
            f"{format_duration(duration)} is too short: access lasts at least "
            f"{format_duration(MIN_DURATION)}."
        )


def _check_window_open(request: AccessRequest, now: datetime, end: datetime | None) -> None:
    """Refuse an approval of a window that ended, or has too little left to grant."""
    if end is None:
        return
    if now >= end:
        raise InvalidTransition(
            f"The window of request {request.label} ended at {windows.render_time(end)}: "
            "it cannot be approved any more; the requester can ask again."
        )
    if end - now < MIN_DURATION:
        raise InvalidTransition(
            f"The window of request {request.label} ends at {windows.render_time(end)}: too "
            f"soon to grant access (at least {format_duration(MIN_DURATION)}). The requester "
            "can ask again."
        )


def approve(
    request: AccessRequest, actor: Actor, policy: RolePolicy, now: datetime, comment: str = "",
    duration: timedelta | None = None,
) -> bool:
    """Record ``actor``'s approval; True when it completes the quorum and approves the request.

    ``duration`` approves less than asked (never more); with a quorum the shortest approved
    duration applies (:attr:`~bot.domain.model.AccessRequest.granted_duration`). A scheduled
    window can be approved until shortly before its end."""
    _check_decider(request, actor, policy, "approve")
    if duration is not None:
        check_approved_duration(request, duration)
    if request.window_start is not None:
        granted = min(request.granted_duration, duration or request.duration)
        _check_window_open(request, now, request.window_start + granted)
    request.approvals.append(
        Approval(actor.user_id, Decision.APPROVE, now, comment.strip(), duration))
    if len(set(request.approvers_so_far())) < policy.approvals_required:
        return False
    request.decided_at = now
    _move(request, Event.APPROVE)
    return True


def approvals_missing(request: AccessRequest, policy: RolePolicy) -> int:
    return max(policy.approvals_required - len(set(request.approvers_so_far())), 0)


def open_to_decision(request: AccessRequest) -> bool:
    """Whether people may still change ``request`` by deciding on it: pending (approve, deny,
    cancel, time out), or approved ahead of its window (its requester may cancel it until the
    window starts). An approval whose grant is under way is changed only by whoever holds
    the grant."""
    return request.state is State.PENDING or (
        request.state is State.APPROVED and windows.approved_ahead(request))


def deny(
    request: AccessRequest, actor: Actor, policy: RolePolicy, now: datetime, reason: str
) -> None:
    check_deny(request, actor, policy, reason)
    reason = reason.strip()
    request.approvals.append(Approval(actor.user_id, Decision.DENY, now, reason))
    request.decided_at = now
    _end(request, Event.DENY, now, actor.user_id, reason)


def cancel(request: AccessRequest, actor: Actor, now: datetime) -> None:
    """The requester withdraws a pending request, or an approved one whose scheduled window
    has not started (:func:`bot.domain.windows.check_not_started`); so may the person it was
    asked for on their behalf, and an admin. Nobody else: an approver denies instead."""
    if actor.user_id == request.requester_id:
        why = "cancelled by the requester"
    elif actor.user_id == request.grantee:
        why = "cancelled by the person it was asked for"
    elif actor.is_admin:
        why = "cancelled by an admin"
    else:
        also = " the person it asks access for, or" if request.on_behalf else ""
        raise NotAuthorized(
            f"Only the requester can cancel request {request.label} (or{also} an admin); "
            "approvers deny it instead.")
    next_state(request, Event.CANCEL)
    if request.state is State.APPROVED:
        windows.check_not_started(request, now)
        why += " before its window started"
    _end(request, Event.CANCEL, now, actor.user_id, why)


def overdue(request: AccessRequest, policy: RolePolicy, now: datetime) -> bool:
    """Whether a pending ``request`` has waited past its deadline
    (:func:`bot.domain.escalation.pending_deadline`) and times out."""
    return now >= escalation.pending_deadline(request, policy)


def time_out(request: AccessRequest, policy: RolePolicy, now: datetime) -> None:
    """Close a request nobody decided by its deadline
    (:func:`bot.domain.escalation.pending_deadline`)."""
    next_state(request, Event.TIME_OUT)
    if not overdue(request, policy, now):
        raise InvalidTransition(f"Request {request.label} has not waited long enough to time out.")
    why = ("its window ended without a decision" if request.window_start is not None
           else f"no decision within {format_duration(policy.pending_timeout)}")
    _end(request, Event.TIME_OUT, now, POLICY_ACTOR, why)


# --- the grant ----------------------------------------------------------------------------


def check_no_duplicate(request: AccessRequest, open_requests: list[AccessRequest]) -> None:
    """One pending request or active grant per person, cluster, role and namespace."""
    for other in open_requests:
        same = (other.cluster, other.role, other.namespace) == (
            request.cluster, request.role, request.namespace)
        if not same or other.kind is not Kind.ACCESS:
            continue
        if other.state is State.ACTIVE:
            raise PolicyViolation(
                f"You already have access to {other.target} with request {other.label}: "
                f"extend it instead (`extend {other.id} 2h reason`)."
            )
        if other.state in WAITING_STATES:
            raise PolicyViolation(
                f"You already asked for {other.target} with request {other.label}; "
                "it is still waiting. Cancel it first to ask again."
            )


def activate(request: AccessRequest, now: datetime) -> None:
    """The backend granted access: the clock starts now, and stops after the duration granted
    or at the scheduled window's end (:func:`bot.domain.windows.planned_end`)."""
    _move(request, Event.PROVISION)
    request.activated_at = now
    if request.kind is Kind.ACCESS:
        request.ends_at = windows.planned_end(request, now)
    request.last_error = None


def fail(request: AccessRequest, now: datetime, error: str) -> None:
    request.last_error = error
    _end(request, Event.FAIL, now, POLICY_ACTOR, error)


def expire(request: AccessRequest, now: datetime) -> None:
    next_state(request, Event.EXPIRE)
    if request.ends_at is None or request.ends_at > now:
        raise InvalidTransition(f"Request {request.label} has time left; it cannot expire yet.")
    _end(request, Event.EXPIRE, now, POLICY_ACTOR, "time is up")


def check_revoke(request: AccessRequest, actor: Actor, policy: RolePolicy) -> None:
    """Refuse unless the grant is active and ``actor`` is its grantee, an approver or an admin."""
    if not policy.may_revoke(actor, request.grantee):
        raise NotAuthorized(
            f"Only the grantee, approvers of {policy.cluster} and admins may revoke "
            f"request {request.label}."
        )
    next_state(request, Event.REVOKE)


def revoke(request: AccessRequest, by: str, now: datetime, reason: str) -> None:
    """The backend confirmed the revocation ``by`` asked for (see :func:`check_revoke`)."""
    _end(request, Event.REVOKE, now, by, reason.strip() or "revoked")


def _end(request: AccessRequest, event: Event, now: datetime, by: str, reason: str) -> None:
    _move(request, event)
    request.ended_at = now
    request.ended_by = by
    request.end_reason = reason


# --- extensions ---------------------------------------------------------------------------


def ending(grant: AccessRequest, now: datetime, revocation_owed: bool) -> bool:
    """Whether the access of ``grant``, still active by its state, is on its way out: its
    revocation is owed (under way, or being retried), or its time is up (the expiry sweep's
    to end). Nothing is left to decide about such a grant, and it is extended no more."""
    return grant.state is State.ACTIVE and (
        revocation_owed or (grant.ends_at is not None and grant.ends_at <= now))


def ending_refusal(grant: AccessRequest) -> InvalidTransition:
    """The answer to extending ``grant`` once its access is :func:`ending`."""
    return InvalidTransition(
        f"Request {grant.label} is already ending (its revocation is under way, or its time "
        "is up), so it can no longer be extended; ask for new access instead.")


def check_extend(grant: AccessRequest, requester: Actor) -> None:
    """Refuse unless ``grant`` is an active grant and ``requester`` its grantee: what
    :func:`file_extension` checks first, so that the Extend form opens only for them."""
    if requester.user_id != grant.grantee:
        raise NotAuthorized(f"Only the grantee can extend request {grant.label}.")
    if not grant.is_active_grant:
        raise InvalidTransition(
            f"Request {grant.label} is {grant.state.value}: only an active grant can be extended."
        )


def file_extension(
    *,
    grant: AccessRequest,
    policy: RolePolicy,
    requester: Actor,
    duration: timedelta,
    reason: str,
    now: datetime,
    revocation_owed: bool = False,
) -> AccessRequest:
    """Ask for more time on an active grant, not one whose access is :func:`ending`
    (``revocation_owed``: its revocation is owed).

    Approved at once when the role allows self-extension and the whole grant stays within the
    role's maximum; otherwise it waits for approval like any request.
    """
    check_extend(grant, requester)
    if ending(grant, now, revocation_owed):
        raise ending_refusal(grant)
    check_duration(policy, duration)
    assert grant.activated_at is not None and grant.ends_at is not None
    extension = AccessRequest(
        requester_id=requester.user_id,
        cluster=grant.cluster,
        role=grant.role,
        namespace=grant.namespace,
        duration=duration,
        reason=_check_reason(policy, reason, required=False),
        subject=grant.subject,
        created_at=now,
        kind=Kind.EXTENSION,
        parent_id=grant.id,
    )
    within_maximum = grant.ends_at + duration - grant.activated_at <= policy.max_duration
    if policy.self_extend and within_maximum:
        _approve_by_policy(extension, now, "self-extension within the role's maximum")
    return extension


def extended_end(extension: AccessRequest, grant: AccessRequest) -> datetime:
    """Where ``extension`` moves ``grant``'s end (by the duration granted); raises
    :class:`InvalidTransition` unless the grant is still active, the only one it can apply to."""
    extended_end_allowed(grant)
    assert grant.ends_at is not None
    return grant.ends_at + extension.granted_duration


def extended_end_allowed(grant: AccessRequest) -> None:
    """Refuse (:class:`InvalidTransition`) unless ``grant`` is active, the only state an
    extension can apply to."""
    if grant.state is not State.ACTIVE or grant.ends_at is None:
        raise InvalidTransition(
            f"Request {grant.label} is {grant.state.value}: the extension cannot apply."
        )


def apply_extension(extension: AccessRequest, grant: AccessRequest, now: datetime) -> None:
    """The backend accepted the longer grant: move the grant's end and mark the extension active."""
    ends_at = extended_end(extension, grant)
    activate(extension, now)
    grant.ends_at = extension.ends_at = ends_at


def end_with_parent(extension: AccessRequest, grant: AccessRequest) -> None:
    """An applied extension ends when its grant ends, in the same way."""
    assert grant.ended_at is not None
    event = Event.EXPIRE if grant.state is State.EXPIRED else Event.REVOKE
    _end(extension, event, grant.ended_at, grant.ended_by or POLICY_ACTOR,
         grant.end_reason or "the grant ended")


def approve_on_call(request: AccessRequest, now: datetime, where: str) -> None:
    """Approve a pending request by policy because the requester is on call (``where`` says
    where, :attr:`bot.domain.oncall.OnCallDecision.detail`); flagged for review like
    break-glass. The rule is :func:`bot.domain.oncall.evaluate_request`."""
    _approve_by_policy(request, now, f"{ON_CALL_RULE}: flagged for review; {where}")
