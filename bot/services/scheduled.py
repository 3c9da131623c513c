"""Scheduled windows in use: ``--at WHEN`` read in the requester's time zone when a request is
filed, and what is checked again when the window starts, before the owed grant is made.

The rules are :mod:`bot.domain.windows`'; the grant itself is an owed operation due at the
window's start (:func:`bot.services.operations.owe_approved`), run by the retry pass like any
other: once, on one replica, surviving restarts.
"""

from __future__ import annotations

from datetime import datetime

from bot.domain import eligibility, windows
from bot.domain.errors import PolicyViolation
from bot.domain.model import AccessRequest
from bot.domain.policy import RolePolicy
from bot.domain.ports import UserInfo
from bot.services.context import Context


def window_start(policy: RolePolicy, at: str | None, requester: UserInfo,
                 now: datetime) -> datetime | None:
    """The start ``at`` names (``2026-12-02T22:00``, ``22:00``, ``tomorrow 22:00``), read in
    ``requester``'s Slack time zone; None when no start was given. Raises
    :class:`~bot.domain.errors.InvalidInput` (not a time) or
    :class:`~bot.domain.errors.PolicyViolation` (in the past, beyond ``max_schedule_ahead``),
    both saying how to write it, in UTC and the requester's local time."""
    if at is None or not at.strip():
        return None
    return windows.schedule(at, now=now, tz=requester.tz, max_ahead=policy.max_schedule_ahead)


def check_at_start(ctx: Context, request: AccessRequest, now: datetime) -> None:
    """Before a scheduled window's grant: the grantee is looked up afresh (their account, the
    user groups that make them eligible, the identity the backend would grant) and
    :func:`bot.domain.windows.check_at_start` decides. Nothing is checked for an unscheduled
    request, approved just now. Raises :class:`~bot.domain.errors.PolicyViolation` (the
    request fails, and its requester is told why), or
    :class:`~bot.domain.errors.TemporaryBackendError` when Slack could not say (tried again)."""
    if request.window_start is None:
        return
    policy = ctx.config.policies.get((request.cluster, request.role))
    if policy is None:
        raise PolicyViolation(f"{request.cluster}/{request.role} is no longer configured")
    with ctx.transaction() as uow:
        grantee = ctx.user_info(request.grantee, uow.links)
    problem = eligibility.account_problem(grantee)
    subject = ctx.granter(request.cluster).resolve_subject(grantee) \
        if problem is None else request.subject
    windows.check_at_start(request, policy, ctx.actor(request.grantee), subject, now,
                           deactivated=grantee.deactivated, account_problem=problem)
