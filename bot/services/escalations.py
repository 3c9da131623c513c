"""Escalation: a request still pending after a step's ``after`` gains that step's approvers,
who are told with the approval message and its buttons and may then decide.

The steps and who they add are :mod:`bot.domain.escalation`'s rule; here a pass applies the
steps due, each request in a transaction of its own with its row locked, so that several
replicas apply each step once: the request counts the steps it applied
(:attr:`~bot.domain.model.AccessRequest.escalations_applied`), and a replica that comes second
finds nothing left to apply.
"""

from __future__ import annotations

import dataclasses
import logging

from bot.domain import escalation
from bot.domain.model import POLICY_ACTOR
from bot.domain.ports import Audience, NoticeKind
from bot.logcontext import request_scope
from bot.services import claims
from bot.services.context import Context, audit

log = logging.getLogger(__name__)


def escalate_pending(ctx: Context, limit: int | None = None) -> int:
    """One escalation pass over the requests waiting longer than the earliest step, up to
    ``limit`` (the tuning's re-notification batch); returns how many were escalated."""
    policies = ctx.config.policies
    earliest = [p.escalation[0].after for p in policies.values() if p.escalation]
    if not earliest:
        return 0
    now = ctx.clock()
    with ctx.transaction() as uow:
        waiting = uow.requests.pending_created_before(
            now - min(earliest), ctx.tuning.batches.renotify if limit is None else limit)
    due = [r.id for r in waiting if r.id is not None
           and (policy := policies.get((r.cluster, r.role))) is not None
           and escalation.due_steps(r, policy, now)]
    return sum(_escalate(ctx, request_id) for request_id in due)


def _escalate(ctx: Context, request_id: int) -> bool:
    """Apply the steps due on one request and tell the approvers they add; False when
    another replica (or a decision) came first, or when Slack could take the message to
    nobody for now: the steps are then given back, for the next pass to apply and tell."""

    applied = claims.claim(ctx, request_id, "escalations_applied", NoticeKind.ESCALATED,
                           escalation.escalate)
    if applied is None:
        return False
    notice, added, before = applied.notice, applied.found, applied.before
    request = notice.request
    with request_scope(request.id):
        told: list[str] = []

        def tell() -> None:
            """Who the steps add is asked of Slack here, outside the transaction (Slack may
            be slow or fail: the steps are then given back). Reaching nobody for now (Slack
            down) is a failure the next pass tries again; reaching nobody ever (every one
            deactivated) is not."""
            people = ctx.directory.users(added)
            audience = Audience(approvers=tuple(sorted(people.users - request.parties)),
                                unlisted=people.unlisted)
            if not (audience.approvers or audience.unlisted):
                return
            to = dataclasses.replace(notice, audience=audience)
            reach = ctx.remember(to, ctx.notifier.notify(to))
            told.extend(audience.approvers)
            if reach is not None and reach.may_reach_later:
                claims.check_reached(request, reach)

        if not claims.deliver(ctx, f"escalation of request {request_id}", applied, tell):
            return False
        log.info("escalated to %s", ", ".join(told) or "nobody new")
        with ctx.transaction() as uow:
            audit(uow.audit, ctx.clock(), POLICY_ACTOR, "escalated", request,
                  steps=list(range(before + 1, request.escalations_applied + 1)),
                  approvers=sorted(added))
    return True

