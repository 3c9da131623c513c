"""On-call auto-approval when a request is filed (SPEC.md, "Integrations").

The on-call services are asked before the request's transaction, since they may take a few
seconds (never inside Slack's acknowledgement: filing runs in the worker). A request they
vouch for is approved by the policy, audited with rule ``on-call``, and announced to the
approvers loudly, flagged for review; any other goes to the approvers as usual, and the
requester is told why. The rule itself is :func:`bot.domain.oncall.evaluate_request`.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.domain import lifecycle
from bot.domain.model import AccessRequest, State
from bot.domain.oncall import ON_CALL_RULE, OnCallDecision, evaluate_request
from bot.domain.policy import RolePolicy
from bot.domain.ports import NoticeKind
from bot.services.context import Context

log = logging.getLogger(__name__)


def consult(ctx: Context, policy: RolePolicy, request: AccessRequest,
            email: str | None) -> OnCallDecision | None:
    """Whether being on call approves the new ``request`` (not yet stored), which it then is,
    by the policy, at its filing time. Sets :attr:`AccessRequest.on_call` to the decision's
    detail. None, asking nobody, when the role has no ``auto_approve_on_call`` or something
    else approved the request already (break-glass, ``auto_approve_up_to``). Takes up to the
    on-call services' timeout; never raises for their failures (doubt is ordinary approval)."""
    if policy.on_call is None or request.state is not State.PENDING:
        return None
    decision = evaluate_request(ctx.on_call, policy.on_call, request, email)
    if decision.approved:
        lifecycle.approve_on_call(request, request.created_at, decision.detail)
    request.on_call = decision.detail
    log.info("%s asked for %s: %s by being on call (%s)", request.requester_id, request.target,
             "approved" if decision.approved else "not approved", decision.detail)
    return decision


def approval_details(decision: OnCallDecision | None) -> dict[str, Any]:
    """The ``approved`` audit event's details for an approval by being on call; empty for
    any other."""
    if decision is None or not decision.approved:
        return {}
    return {"rule": ON_CALL_RULE, "on_call": decision.detail}


def notice_kind(decision: OnCallDecision | None) -> NoticeKind:
    """How the approvers hear of the new request: loudly when being on call approved it."""
    return NoticeKind.ON_CALL_APPROVED if decision is not None and decision.approved \
        else NoticeKind.FILED


def told(filed: AccessRequest, final: AccessRequest) -> AccessRequest:
    """``final`` (the request read back after its grant) with what ``filed`` was told."""
    final.on_call = filed.on_call
    return final
