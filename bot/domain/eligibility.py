"""Who may ask for a role, and who may ask on someone else's behalf.

A role's ``requesters`` lists the Slack users and user groups who may ask for it; unset, anyone
may. Asking for someone else is open to the role's approvers and to admins, and to anyone who
may ask for the role where it sets ``request_for_others: true``; the person who receives the
access must be one who may ask for it themselves. Every check receives people with their user
groups already resolved (:class:`~bot.domain.model.Actor`), so nothing here looks anyone up.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.domain.errors import NotAuthorized, PolicyViolation
from bot.domain.model import AccessRequest, Actor
from bot.domain.policy import RolePolicy
from bot.domain.ports import UserInfo


class NotEligible(NotAuthorized):
    """``person`` may not ask for the role; ``requesters`` lists who may (Slack user and user
    group IDs), for an edge that shows them as mentions; ``asking`` is False when the person
    refused is the one asked for, not the one asking."""

    def __init__(self, message: str, *, requesters: frozenset[str], asking: bool = True) -> None:
        super().__init__(message)
        self.requesters = requesters
        self.asking = asking


def check_eligible(policy: RolePolicy, person: Actor, *, asking: bool = True) -> None:
    """Refuse with :class:`NotEligible` unless ``person`` may ask for the role. ``asking`` is
    False when someone else asks for ``person``: the message then speaks of them."""
    if policy.may_request(person):
        return
    assert policy.requesters is not None
    whom = "You are" if asking else "The person you ask for is"
    raise NotEligible(
        f"{whom} not among those who may ask for {policy.cluster}/{policy.role}: "
        f"{_who(policy.requesters, policy.user_groups)} may. Ask one of the approvers if you "
        "need it.",
        requesters=policy.requesters, asking=asking,
    )


def may_request_for_others(policy: RolePolicy, requester: Actor) -> bool:
    """Approvers and admins always may; others where the role allows it and they may ask."""
    if policy.is_approver_or_admin(requester):
        return True
    return policy.request_for_others and policy.may_request(requester)


def check_request_for(policy: RolePolicy, requester: Actor, grantee: Actor) -> None:
    """Refuse unless ``requester`` may ask for ``grantee`` (who may be ``requester``).

    Raises :class:`NotAuthorized` (a requester who may not ask for others) or
    :class:`NotEligible` (a person who may not have the role)."""
    if grantee.user_id == requester.user_id:
        check_eligible(policy, requester)
        return
    if not may_request_for_others(policy, requester):
        raise NotAuthorized(
            f"Only approvers of {policy.cluster}/{policy.role} and admins may ask for it on "
            "someone else's behalf: ask for yourself, or let them ask."
        )
    check_eligible(policy, grantee, asking=False)


def check_not_break_glass_for_others(requester: Actor, grantee: Actor, policy: RolePolicy) -> None:
    """Break-glass is self-activation: nobody breaks the glass for someone else."""
    if grantee.user_id != requester.user_id:
        raise PolicyViolation(
            f"Break-glass on {policy.cluster}/{policy.role} is for yourself only: ask for "
            "approval on their behalf instead, or let them break the glass."
        )


def check_ask_again(request: AccessRequest, user_id: str) -> None:
    """Refuse unless ``user_id`` is one of ``request``'s parties: only they may ask again as it
    was asked (the request form it opens shows its reason)."""
    if user_id not in request.parties:
        raise NotAuthorized(f"Request {request.label} is not yours to ask for again.")


def eligible_policies(policies: Iterable[RolePolicy], person: Actor) -> list[RolePolicy]:
    """The roles ``person`` may ask for, in the order given: what a request form and the
    ``clusters`` listing show them."""
    return [policy for policy in policies if policy.may_request(person)]


def _who(principals: frozenset[str], user_groups: frozenset[str]) -> str:
    if not principals:
        return "nobody"
    users = sorted(principals - user_groups)
    groups = sorted(principals & user_groups)
    parts = [*users, *(f"members of user group {g}" for g in groups)]
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def account_problem(info: UserInfo) -> str | None:
    """Why the account ``info`` describes cannot receive access, in words that name it; None
    for a full member of the workspace. Access is personal: a deactivated account, a bot or
    app, a guest or someone from another organisation never receives it."""
    who = f"{info.slack_user_id} ({info.name})" if info.name else info.slack_user_id
    if info.deactivated:
        return f"the Slack account of {who} is deactivated"
    if not info.known:
        return f"Slack knows no active user {who}"
    if info.bot:
        return f"{who} is a bot or an app, not a person"
    if info.external:
        return f"{who} is from another organisation (a Slack Connect user)"
    if info.guest:
        return f"{who} is a guest of this workspace"
    return None
