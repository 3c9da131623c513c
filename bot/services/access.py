"""What people do with access requests: file one, approve or deny it, cancel it, extend a
grant, list what they may see; and what happens to a request nobody decides on in time.

Each function is one use case in one transaction with its audit event; the people concerned
hear of it after the commit; backend work that an approval makes due runs right after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.domain import eligibility, lifecycle, windows
from bot.domain.errors import InvalidInput, PolicyViolation
from bot.domain.model import (
    WAITING_STATES,
    AccessRequest,
    Kind,
    OperationKind,
    Reach,
    State,
)
from bot.domain.ports import Audience, Notice, NoticeKind, UnitOfWork
from bot.logcontext import request_scope, scoped
from bot.services import asking, grants, oncall, operations, scheduled
from bot.services.context import Context, audit, retrying

log = logging.getLogger(__name__)


def file_request(
    ctx: Context,
    user_id: str,
    cluster: str,
    role: str,
    *,
    duration: timedelta | None = None,
    reason: str = "",
    namespace: str | None = None,
    break_glass: bool = False,
    user_csr: str | None = None,
    grantee_id: str | None = None,
    at: str | None = None,
) -> AccessRequest:
    """File a request; approvers hear of it, or the policy approves it at once.
    ``grantee_id``: the Slack user who receives the access when asked on their behalf; ``at``
    schedules its window (``--at WHEN``, read in the requester's Slack time zone)."""
    policy = ctx.config.policy(cluster, role)
    granter = ctx.granter(cluster)
    requester = ctx.actor(user_id)
    grantee = asking.grantee(ctx, requester, grantee_id)
    eligibility.check_request_for(policy, requester, grantee)
    with ctx.transaction() as uow:
        user = ctx.user_info(grantee.user_id, uow.links)
    asker = user if grantee.user_id == user_id else ctx.directory.user_info(user_id)
    subject = granter.resolve_subject(user)
    now = ctx.clock()
    request = lifecycle.file_request(
        policy=policy, requester=requester, subject=subject, duration=duration, reason=reason,
        now=now, namespace=namespace, break_glass=break_glass, user_csr=user_csr,
        grantee=grantee,
        window_start=scheduled.window_start(policy, at, asker, now),
    )
    if request.user_csr:
        granter.check_user_csr(request.user_csr, subject)
    on_call = oncall.consult(ctx, policy, request, user.email)

    def store() -> operations.Held | None:
        """One pending request per grantee, cluster, role and namespace: checked here, and
        kept by the database against a request filed at the same moment (filing again then
        finds it, and the duplicate check says so)."""
        with ctx.transaction() as uow:
            asking.check_no_duplicate(uow.requests, request)
            uow.requests.add(request)
            audit(uow.audit, now, user_id, "requested", request, target=request.target,
                  duration=int(request.duration.total_seconds()), reason=request.reason,
                  subject=subject, break_glass=request.break_glass or None,
                  on_call=request.on_call, window_start=_iso(request.window_start),
                  window_end=_iso(request.window_end), **asking.filing_details(request))
            held = None
            if request.state is State.APPROVED:
                held = _owe(ctx, uow, request, now)
                audit(uow.audit, now, "policy", "approved", request,
                      **(oncall.approval_details(on_call)
                         or {"rule": "break-glass" if break_glass else "auto-approve"}))
            return held

    held = retrying(store)
    with request_scope(request.id):
        log.info("%s asked for %s for %s as %s", user_id, request.target,
                 request.duration, subject)
        request.approvals_missing = lifecycle.approvals_missing(request, policy)
        request.notified = announce(ctx, Notice(
            oncall.notice_kind(on_call), request, approvals_missing=request.approvals_missing))
        if held is not None:
            return oncall.told(request, operations.run_held(ctx, held))
    return request


def _owe(ctx: Context, uow: UnitOfWork, request: AccessRequest,
         now: datetime) -> operations.Held | None:
    """Owe the grant of a request just approved in ``uow``: held by this worker to run at once
    (:func:`operations.owe_held`), or, for a window that starts later, owed for its start (the
    retry pass runs it then); None when nothing is to run now."""
    if request.parent_id is not None:  # an extension: of a grant that is not ending
        operations.check_extensible(uow.operations,
                                    uow.requests.get(request.parent_id, for_update=True))
    if windows.activation_due(request, now):
        return operations.owe_held(ctx, uow, request, now)
    operations.owe_approved(uow.operations, request, now)
    return None


def announce(ctx: Context, notice: Notice) -> Reach | None:
    """Tell the approvers of a new request and return where it went. When it reached nobody
    and still needs a decision (or is break-glass or approved by being on call, which the
    approvers must see), that is audited, and the admins and the requester are told why."""
    request = notice.request
    reach = ctx.tell_approvers(notice)
    if reach is None or reach.reached or not (
            request.state is State.PENDING or request.break_glass
            or notice.kind is NoticeKind.ON_CALL_APPROVED):
        return reach
    now = ctx.clock()
    with ctx.transaction() as uow:
        audit(uow.audit, now, "bot", "approvers unreachable", request,
              undelivered={u.recipient: u.error for u in reach.undelivered})
    told = ctx.announce(Notice(NoticeKind.UNREACHABLE, request, reach=reach,
                               audience=Audience(admins=ctx.admins())))
    return Reach(channel=reach.channel, people=reach.people, undelivered=reach.undelivered,
                 admins=told.people if told is not None else ())


@scoped
def extend(ctx: Context, grant_id: int, user_id: str, duration: timedelta,
           reason: str = "") -> AccessRequest:
    """Ask for more time on an active grant (approved at once where the role allows)."""
    requester = ctx.actor(user_id)
    now = ctx.clock()
    with ctx.transaction() as uow:
        grant = uow.requests.get(grant_id, for_update=True)
        policy = ctx.config.policy(grant.cluster, grant.role)
        extension = lifecycle.file_extension(
            grant=grant, policy=policy, requester=requester, duration=duration, reason=reason,
            now=now, revocation_owed=operations.owes_revocation(uow.operations, grant))
        operations.check_extensible(uow.operations, grant)
        waiting = uow.requests.find(parent_id=grant_id, states=WAITING_STATES)
        if waiting:
            raise PolicyViolation(
                f"Request {grant.label} already has extension #{waiting[0].id} waiting.")
        uow.requests.add(extension)
        audit(uow.audit, now, user_id, "extension requested", extension, grant=grant_id,
              duration=int(duration.total_seconds()), reason=extension.reason)
        operation = operations.owe_approved(uow.operations, extension, now) \
            if extension.state is State.APPROVED else None
    extension.approvals_missing = lifecycle.approvals_missing(extension, policy)
    extension.notified = announce(ctx, Notice(
        NoticeKind.FILED, extension, parent=grant, approvals_missing=extension.approvals_missing))
    if operation is not None:
        return operations.run_operation(ctx, operation) or grants.get(ctx, extension.id or 0)
    return extension


@scoped
def approve(ctx: Context, request_id: int, user_id: str, comment: str = "",
            duration: timedelta | None = None) -> AccessRequest:
    """Record an approval; the last one the quorum needs approves and provisions the request.
    ``duration`` approves less than asked (never more); the shortest approved applies. The
    request comes back with the approvals it still misses (``approvals_missing``).

    The approval that completes the quorum owes the grant and takes its lease in the same
    transaction (:func:`operations.owe_held`); the backend call follows at once. A window
    approved ahead of its start owes the grant for the start instead (the retry pass runs it)."""
    actor = ctx.actor(user_id)

    def decide() -> tuple[Notice, operations.Held | None]:
        now = ctx.clock()
        with ctx.transaction() as uow:
            request = uow.requests.get(request_id, for_update=True)
            policy = ctx.config.policy(request.cluster, request.role)
            complete = lifecycle.approve(request, actor, policy, now, comment, duration)
            uow.requests.save(request)
            audit(uow.audit, now, user_id, "approved" if complete else "approval recorded",
                  request, comment=comment or None, window_start=_iso(request.window_start),
                  **asking.approval_details(request, duration))
            held = _owe(ctx, uow, request, now) if complete else None
            if held is None:
                ctx.settle(uow)
            decision = ctx.prepared(uow, Notice(NoticeKind.DECISION, request, actor=user_id))
        return decision, held

    decision, held = retrying(decide)
    request = decision.request
    request.approvals_missing = decision.approvals_missing
    log.info("%s approved; %s more approvals needed", user_id, decision.approvals_missing)
    ctx.notify(decision)
    if request.state is State.APPROVED:  # the quorum is met: now, or at the window's start
        ctx.notify(Notice(NoticeKind.APPROVED, request, actor=user_id))
    return request if held is None else operations.run_held(ctx, held)


@scoped
def deny(ctx: Context, request_id: int, user_id: str, reason: str) -> AccessRequest:
    actor = ctx.actor(user_id)

    def decide() -> Notice:
        now = ctx.clock()
        with ctx.transaction() as uow:
            request = uow.requests.get(request_id, for_update=True)
            policy = ctx.config.policy(request.cluster, request.role)
            lifecycle.deny(request, actor, policy, now, reason)
            uow.requests.save(request)
            audit(uow.audit, now, user_id, "denied", request, reason=request.end_reason)
            return ctx.prepared(uow, Notice(NoticeKind.DENIED, request, actor=user_id))

    denial = retrying(decide)
    ctx.notify(denial)
    return denial.request


@scoped
def cancel(ctx: Context, request_id: int, user_id: str) -> AccessRequest:
    """Withdraw a request: its requester, the person it was asked for, or an admin."""
    actor = ctx.actor(user_id)

    def withdraw() -> Notice:
        now = ctx.clock()
        with ctx.transaction() as uow:
            request = uow.requests.get(request_id, for_update=True)
            approved = request.state is State.APPROVED
            lifecycle.cancel(request, actor, now)
            uow.requests.save(request)
            operations.forgo(uow.operations, request, OperationKind.GRANT, request.end_reason or "")
            audit(uow.audit, now, user_id, "cancelled", request,
                  window_start=_iso(request.window_start) if approved else None)
            return ctx.prepared(uow, Notice(NoticeKind.CANCELLED, request, actor=user_id))

    cancellation = retrying(withdraw)
    ctx.notify(cancellation)
    return cancellation.request


def time_out_pending(ctx: Context, limit: int | None = None) -> int:
    """Close requests nobody decided on by their deadline (their role's timeout, or the end
    of their scheduled window: :func:`bot.domain.escalation.pending_deadline`), up to
    ``limit`` (the tuning's batch) at a time; returns how many."""
    now = ctx.clock()
    shortest = min(p.pending_timeout for p in ctx.config.policies.values())
    notices = []
    with ctx.transaction() as uow:
        for request in uow.requests.pending_past(
                now - shortest, now, ctx.tuning.batches.timeouts if limit is None else limit):
            policy = ctx.config.policies.get((request.cluster, request.role))
            if policy is None or not lifecycle.overdue(request, policy, now):
                continue
            lifecycle.time_out(request, policy, now)
            uow.requests.save(request)
            audit(uow.audit, now, "policy", "timed out", request, reason=request.end_reason)
            notices.append(ctx.prepared(uow, Notice(NoticeKind.TIMED_OUT, request)))
    ctx.notify(*notices)
    return len(notices)


class Scope(StrEnum):
    MINE = "mine"
    PENDING = "pending"
    ACTIVE = "active"
    ALL = "all"


@dataclass(frozen=True)
class Listing:
    scope: Scope
    requests: list[AccessRequest]


def list_requests(ctx: Context, user_id: str, scope: str = "mine", limit: int = 50) -> Listing:
    """What ``user_id`` may see: their own (filed by them or for them), or what they may act
    on as approver or admin."""
    try:
        chosen = Scope(scope.strip().lower() or "mine")
    except ValueError:
        raise InvalidInput(
            f"'{scope}' is not a list: use `list mine`, `list pending`, `list active` "
            "or `list all`."
        ) from None
    actor = ctx.actor(user_id)
    policies = ctx.config.policies.values()
    approves = [p for p in policies if p.is_approver(actor)]
    revokes = {p.cluster for p in policies if p.oversees(actor)}
    with ctx.transaction() as uow:
        if chosen is Scope.MINE:
            found = uow.requests.find(involving=user_id, limit=limit)
        elif chosen is Scope.PENDING:
            clusters = None if actor.is_admin else sorted({p.cluster for p in approves})
            found = [r for r in uow.requests.find(states=[State.PENDING], clusters=clusters,
                                                  limit=limit)
                     if actor.is_admin or any((r.cluster, r.role) == (p.cluster, p.role)
                                              for p in approves)]
            if not actor.is_admin:
                found = [r for r in found if user_id not in r.parties]
        elif chosen is Scope.ACTIVE:
            clusters = None if actor.is_admin else sorted(revokes)
            found = uow.requests.find(states=[State.ACTIVE], clusters=clusters,
                                      kind=Kind.ACCESS, limit=limit)
            if not actor.is_admin and not clusters:
                found = []
            mine = uow.requests.find(involving=user_id, states=[State.ACTIVE],
                                     kind=Kind.ACCESS)
            found = _merge(found, mine)
        else:
            clusters = None if actor.is_admin else sorted(revokes)
            found = uow.requests.find(clusters=clusters, limit=limit) \
                if actor.is_admin or clusters else []
            found = _merge(found, uow.requests.find(involving=user_id, limit=limit))[:limit]
    for request in found:
        request.approvals_missing = ctx.missing_approvals(request)
    return Listing(chosen, found)


def _merge(first: list[AccessRequest], second: list[AccessRequest]) -> list[AccessRequest]:
    seen = {r.id for r in first}
    merged = first + [r for r in second if r.id not in seen]
    return sorted(merged, key=lambda r: (r.created_at, r.id or 0), reverse=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
