"""Who may ask for what, for whom, and for how long: what filing and approving a request check
beyond the lifecycle, shared by Slack and the CLI.

- **Eligibility**: a role's ``requesters`` (:mod:`bot.domain.eligibility`) decide who may ask;
  :func:`askable` is what a request form and the ``clusters`` listing offer a person.
- **On someone's behalf**: :func:`grantee` resolves the person asked for (who must exist);
  the lifecycle checks that the requester may ask for them and that they may have the role;
  :func:`open_requests_of` is what the duplicate check compares with: the grantee's.
- **Approve for less**: :func:`approval_details` is what the audit says of an approval that
  granted less than asked.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.domain import eligibility, lifecycle
from bot.domain.errors import NotFound, PolicyViolation
from bot.domain.model import OPEN_STATES, AccessRequest, Actor, Kind
from bot.domain.policy import RolePolicy
from bot.domain.ports import AccessRequests
from bot.services.context import Context


def askable(ctx: Context, user_id: str) -> list[RolePolicy]:
    """The roles ``user_id`` may ask for, in configuration order: those whose ``requesters``
    include them, and those they may ask for on someone else's behalf (they approve it); every
    role for an admin."""
    actor = ctx.actor(user_id)
    policies = list(ctx.config.policies.values())
    if actor.is_admin:
        return policies
    return [policy for policy in policies
            if policy.may_request(actor) or eligibility.may_request_for_others(policy, actor)]


def grantee(ctx: Context, requester: Actor, grantee_id: str | None) -> Actor:
    """Who receives the access, their user groups resolved: ``requester``, or the Slack user
    asked for. :class:`NotFound` when the directory knows no such (active) person."""
    if grantee_id is None or grantee_id == requester.user_id:
        return requester
    info = ctx.directory.user_info(grantee_id)
    problem = eligibility.account_problem(info)
    if problem is not None:
        how = ("mention the person you ask for by picking them from the list Slack offers "
               "as you type @, like `request --for @bob staging view 2h reason`"
               if not info.known and not info.deactivated
               else "access can only be asked for a full member of this workspace")
        error = NotFound if not info.known and not info.deactivated else PolicyViolation
        raise error(f"{problem[0].upper()}{problem[1:]}: {how}.")
    return ctx.actor(grantee_id)


def check_may_ask(ctx: Context, user_id: str, policy: RolePolicy,
                  grantee_id: str | None = None) -> None:
    """Refuse before anything else is asked (a form opened, a duration read) unless
    ``user_id`` may ask for ``policy``'s role for ``grantee_id`` (themselves when None):
    :class:`~bot.domain.eligibility.NotEligible` names who may."""
    requester = ctx.actor(user_id)
    eligibility.check_request_for(policy, requester, grantee(ctx, requester, grantee_id))


def open_requests_of(requests: AccessRequests, request: AccessRequest) -> list[AccessRequest]:
    """The open access requests of the person ``request`` is for, on its cluster: what
    :func:`bot.domain.lifecycle.check_no_duplicate` compares it with."""
    return requests.find(grantee=request.grantee,
                         states=OPEN_STATES,
                         clusters=[request.cluster], kind=Kind.ACCESS)


def check_no_duplicate(requests: AccessRequests, request: AccessRequest) -> None:
    """One pending request or active grant per grantee, cluster, role and namespace
    (:func:`bot.domain.lifecycle.check_no_duplicate`); on someone's behalf, the refusal
    speaks of them and of the request that is in the way."""
    for other in open_requests_of(requests, request):
        try:
            lifecycle.check_no_duplicate(request, [other])
        except PolicyViolation:
            if not request.on_behalf:
                raise
            raise PolicyViolation(
                f"The person you ask for already has {request.target} open with request "
                f"{other.label} ({other.state.value}): they can extend it or cancel it first."
            ) from None


def filing_details(request: AccessRequest) -> dict[str, Any]:
    """What the ``requested`` audit event adds for a request on someone's behalf."""
    return {"grantee": request.grantee_id} if request.on_behalf else {}


def approval_details(request: AccessRequest, duration: timedelta | None) -> dict[str, Any]:
    """What an approval's audit event adds when it approved less than asked (seconds), and
    what the request is granted for once decided."""
    if duration is None:
        return {}
    return {"approved_for": int(duration.total_seconds()),
            "granted": int(request.granted_duration.total_seconds())}
