"""Approving a shorter duration than asked, table-driven: never longer, never nothing, and with
a quorum the shortest approved applies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import lifecycle
from bot.domain.errors import InvalidInput, PolicyViolation
from bot.domain.model import AccessRequest, Actor, State
from bot.domain.policy import RolePolicy

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
H, M = timedelta(hours=1), timedelta(minutes=1)
ALICE, BOB, CAROL, DAVE = Actor("U0ALICE"), Actor("U0BOB"), Actor("U0CAROL"), Actor("U0DAVE")
POLICY = RolePolicy(cluster="prod", role="edit",
                    approvers=frozenset({"U0BOB", "U0CAROL", "U0DAVE"}),
                    cluster_approvers=frozenset(), max_duration=8 * H, default_duration=H)


def asked(duration: timedelta = 4 * H, *, quorum: int = 1) -> tuple[AccessRequest, RolePolicy]:
    policy = RolePolicy(**{**POLICY.__dict__, "approvals_required": quorum})
    return lifecycle.file_request(policy=policy, requester=ALICE, subject="s", duration=duration,
                                  reason="x", now=NOW), policy


@pytest.mark.parametrize(("approved", "refused", "says"), [
    (None, None, None),
    (4 * H, None, None),                      # as much as asked
    (H, None, None),
    (10 * M, None, None),                     # the shortest grant there is
    (9 * M, PolicyViolation, "too short: access lasts at least 10m"),
    (5 * H, PolicyViolation, "asks for 4h: approve for that or less, not 5h"),
    (timedelta(), InvalidInput, "no time at all"),
    (-H, InvalidInput, "no time at all"),
])
def test_an_approval_may_carry_a_shorter_duration(approved: timedelta | None,
                                                  refused: type[Exception] | None,
                                                  says: str | None) -> None:
    request, policy = asked()
    if refused is not None:
        with pytest.raises(refused, match=says):
            lifecycle.approve(request, BOB, policy, NOW, duration=approved)
        assert request.approvals == [] and request.state is State.PENDING
        return
    assert lifecycle.approve(request, BOB, policy, NOW, duration=approved)
    assert request.duration == 4 * H  # what was asked stays on record
    assert request.granted_duration == (approved or 4 * H)
    lifecycle.activate(request, NOW)
    assert request.ends_at == NOW + (approved or 4 * H)


@pytest.mark.parametrize(("approvals", "granted"), [
    ((None, None), 4 * H),
    ((2 * H, None), 2 * H),
    ((None, 3 * H), 3 * H),
    ((3 * H, H), H),
    ((H, 3 * H), H),
])
def test_with_a_quorum_the_shortest_approved_applies(approvals: tuple[timedelta | None, ...],
                                                     granted: timedelta) -> None:
    request, policy = asked(quorum=2)
    completed = [lifecycle.approve(request, who, policy, NOW, duration=duration)
                 for who, duration in zip((BOB, CAROL), approvals, strict=True)]
    assert completed == [False, True]
    assert request.granted_duration == granted


def test_a_denial_carries_no_duration_and_a_shorter_window_ends_sooner() -> None:
    policy = POLICY
    request = lifecycle.file_request(policy=policy, requester=ALICE, subject="s",
                                     duration=4 * H, reason="x", now=NOW,
                                     window_start=NOW + H)
    lifecycle.approve(request, BOB, policy, NOW, duration=2 * H)
    assert request.window_end == NOW + 3 * H
    lifecycle.activate(request, NOW + H)
    assert request.ends_at == NOW + 3 * H


def test_an_extension_approved_for_less_lengthens_the_grant_by_that() -> None:
    policy = POLICY
    grant, _ = asked(2 * H)
    grant.id = 1
    lifecycle.approve(grant, BOB, policy, NOW)
    lifecycle.activate(grant, NOW)
    extension = lifecycle.file_extension(grant=grant, policy=policy, requester=ALICE,
                                         duration=2 * H, reason="more", now=NOW + H)
    lifecycle.approve(extension, CAROL, policy, NOW + H, duration=30 * M)
    lifecycle.apply_extension(extension, grant, NOW + H)
    assert grant.ends_at == NOW + 2 * H + 30 * M
