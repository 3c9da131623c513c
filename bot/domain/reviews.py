"""Access reviews that record decisions: each week the approvers of a cluster decide, for every
active grant, to keep it (an attestation) or to revoke it.

A *review* is one weekly message to one audience (an approvers channel, or one approver where a
role has none) listing the active grants that audience oversees. A grant gets at most one
decision per week (its *period*, the weekly schedule's occurrence), whoever of its audiences
makes it; a grant nobody decided that is still active is *carried over* into the next week's
review, flagged so.

Who may decide follows the rule for approvals (SPEC "Policy"): the cluster's approvers and the
admins, never the person who holds the access nor the one who asked for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.domain.errors import InvalidTransition, NotAuthorized
from bot.domain.model import AccessRequest, Actor, MessageRef, State
from bot.domain.policy import RolePolicy


class Verdict(StrEnum):
    KEEP = "keep"
    REVOKE = "revoke"


@dataclass(frozen=True)
class ReviewDecision:
    """What one reviewer decided about one grant in one week."""

    grant_id: int
    verdict: Verdict
    by: str
    """The reviewer's Slack user ID."""
    at: datetime


class ItemStatus(StrEnum):
    OPEN = "open"
    """Active and undecided: Keep and Revoke are offered."""
    KEPT = "kept"
    REVOKED = "revoked"
    ENDED = "ended"
    """No decision, but the grant ended anyway (expired, or revoked outside the review), or
    its access is ending (:func:`bot.domain.lifecycle.ending`)."""


@dataclass(frozen=True)
class ReviewItem:
    grant: AccessRequest
    carried_over: bool = False
    """Last week's review listed it and nobody decided."""
    decision: ReviewDecision | None = None
    ending: bool = False
    """Its access is ending though the grant is still active
    (:func:`bot.domain.lifecycle.ending`), as of when the review was read."""

    @property
    def status(self) -> ItemStatus:
        if self.decision is not None:
            return ItemStatus.KEPT if self.decision.verdict is Verdict.KEEP \
                else ItemStatus.REVOKED
        return ItemStatus.OPEN if self.grant.state is State.ACTIVE and not self.ending \
            else ItemStatus.ENDED


@dataclass(frozen=True)
class AccessReview:
    """One audience's review of one week, as stored: its grants in the order listed, each with
    the week's decision on it."""

    period: str
    """The weekly occurrence it belongs to (``2026-11-30T09:00``, the schedule's local time)."""
    audience: str
    """An approvers channel, or one approver (user ID)."""
    items: tuple[ReviewItem, ...]
    id: int | None = None
    message: MessageRef | None = None
    """Where it was posted, to update it in place; None until it was."""

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def reviewed(self) -> int:
        """Items that need no decision any more (decided, or ended)."""
        return sum(item.status is not ItemStatus.OPEN for item in self.items)

    def progress(self) -> str:
        return f"{self.reviewed} of {self.total} reviewed"


def carried_over(grant_ids: Iterable[int], undecided_last_week: Iterable[int]) -> frozenset[int]:
    """The grants of this week's review that last week's listed and nobody decided."""
    return frozenset(grant_ids) & frozenset(undecided_last_week)


def check_reviewer(grant: AccessRequest, actor: Actor, policy: RolePolicy) -> None:
    """:class:`NotAuthorized` unless ``actor`` approves any role of the grant's cluster or is
    an admin, and always for its grantee and its requester. Checked before anything else is
    looked at, so that someone who may not decide learns nothing of the grant's review."""
    if actor.user_id in grant.parties:
        raise NotAuthorized(
            f"You cannot review grant {grant.label}: it is your own access, or you asked for "
            "it. Another approver of the cluster or an admin decides.")
    if not policy.oversees(actor):
        raise NotAuthorized(
            f"Only approvers of {policy.cluster} and admins may review grant {grant.label}.")


def check_decide(grant: AccessRequest, actor: Actor, policy: RolePolicy,
                 earlier: ReviewDecision | None, *, is_ending: bool = False) -> None:
    """Refuse a review decision on ``grant`` by ``actor``, with a message for them.

    :class:`NotAuthorized` as :func:`check_reviewer` says, before anything else;
    :class:`InvalidTransition` when the grant is not an active grant, when ``earlier`` (this
    week's decision) exists, or when its access is ending (``is_ending``, see
    :func:`bot.domain.lifecycle.ending`)."""
    check_reviewer(grant, actor, policy)
    if not grant.is_active_grant:
        raise InvalidTransition(
            f"Grant {grant.label} is {grant.state.value}: there is nothing left to review.")
    if earlier is not None:
        verb = "kept" if earlier.verdict is Verdict.KEEP else "revoked"
        raise InvalidTransition(
            f"Grant {grant.label} was already reviewed this week: {verb} at "
            f"{earlier.at.strftime('%Y-%m-%d %H:%M UTC')}.")
    if is_ending:
        raise InvalidTransition(
            f"Grant {grant.label} is already ending (its revocation is under way, or its time "
            "is up): there is nothing left to review.")
