"""The access review's rules, with no fakes: who may decide on a grant, what is carried over,
and how progress is counted."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.errors import DomainError, InvalidTransition, NotAuthorized
from bot.domain.lifecycle import ending
from bot.domain.model import AccessRequest, Actor, Kind, State
from bot.domain.policy import RolePolicy
from bot.domain.reviews import (
    AccessReview,
    ItemStatus,
    ReviewDecision,
    ReviewItem,
    Verdict,
    carried_over,
    check_decide,
)

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ALICE, BOB, CAROL, DAVE, ERIN, ADMIN = (
    "U0ALICE01", "U0BOB0002", "U0CAROL03", "U0DAVE004", "U0ERIN005", "U0ADMIN05")
SRE = "S0SRE0001"

POLICY = RolePolicy(cluster="staging", role="view", approvers=frozenset({BOB, SRE}),
                    cluster_approvers=frozenset({BOB, SRE, CAROL}),
                    max_duration=timedelta(days=1), default_duration=timedelta(hours=1))
"""Bob and the SRE group approve this role; Carol approves another role of the cluster."""


def grant(**fields: object) -> AccessRequest:
    base = AccessRequest(requester_id=ALICE, cluster="staging", role="view",
                         duration=timedelta(hours=4), reason="debug", subject="alice",
                         created_at=NOW, state=State.ACTIVE, activated_at=NOW,
                         ends_at=NOW + timedelta(hours=4), id=7)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


KEPT = ReviewDecision(7, Verdict.KEEP, BOB, NOW)
ADMIN_ACTOR = Actor(ADMIN, is_admin=True)

DECIDE_CASES: list[tuple[str, AccessRequest, Actor, ReviewDecision | None,
                         type[DomainError] | None]] = [
    ("an approver of the role", grant(), Actor(BOB), None, None),
    ("a member of an approver group", grant(), Actor(DAVE, frozenset({SRE})), None, None),
    ("an approver of another role of the cluster", grant(), Actor(CAROL), None, None),
    ("an admin", grant(), ADMIN_ACTOR, None, None),
    ("the grantee", grant(), Actor(ALICE), None, NotAuthorized),
    ("the grantee, though an approver", grant(requester_id=BOB), Actor(BOB), None,
     NotAuthorized),
    ("the grantee, though an admin", grant(requester_id=ADMIN), ADMIN_ACTOR, None,
     NotAuthorized),
    ("the grantee asked for by someone else", grant(requester_id=BOB, grantee_id=CAROL),
     Actor(CAROL), None, NotAuthorized),
    ("the one who asked on the grantee's behalf", grant(requester_id=BOB, grantee_id=ALICE),
     Actor(BOB), None, NotAuthorized),
    ("a stranger", grant(), Actor(ERIN), None, NotAuthorized),
    ("a stranger in another group", grant(), Actor(ERIN, frozenset({"S0OTHER01"})), None,
     NotAuthorized),
    ("an approver, after a decision", grant(), Actor(DAVE, frozenset({SRE})), KEPT,
     InvalidTransition),
    ("the same approver again (a double click)", grant(), Actor(BOB), KEPT,
     InvalidTransition),
    ("an approver, on a grant revoked since", grant(state=State.REVOKED), Actor(BOB), None,
     InvalidTransition),
    ("an approver, on an expired grant", grant(state=State.EXPIRED), Actor(BOB), None,
     InvalidTransition),
    ("an approver, on an extension", grant(kind=Kind.EXTENSION, parent_id=3), Actor(BOB), None,
     InvalidTransition),
    ("a stranger, on a decided grant: told they may not, not what was decided", grant(),
     Actor(ERIN), KEPT, NotAuthorized),
    ("a stranger, on an ended grant: told they may not, not that it ended",
     grant(state=State.REVOKED), Actor(ERIN), None, NotAuthorized),
    ("the grantee, on an ended grant", grant(state=State.EXPIRED), Actor(ALICE), None,
     NotAuthorized),
]
ENDING_CASES: list[tuple[str, Actor, ReviewDecision | None, type[DomainError]]] = [
    ("an approver, on a grant whose access is ending", Actor(BOB), None, InvalidTransition),
    ("an admin, on a grant whose access is ending", ADMIN_ACTOR, None, InvalidTransition),
    ("a stranger, on a grant whose access is ending", Actor(ERIN), None, NotAuthorized),
    ("the grantee, on a grant whose access is ending", Actor(ALICE), None, NotAuthorized),
    ("an approver, on a decided grant whose access is ending", Actor(BOB), KEPT,
     InvalidTransition),
]


@pytest.mark.parametrize(("case", "actor", "earlier", "refused"), ENDING_CASES,
                         ids=[c[0] for c in ENDING_CASES])
def test_nobody_decides_on_a_grant_whose_access_is_ending(
        case: str, actor: Actor, earlier: ReviewDecision | None,
        refused: type[DomainError]) -> None:
    with pytest.raises(refused) as raised:
        check_decide(grant(), actor, POLICY, earlier, is_ending=True)
    assert "#7" in raised.value.message


@pytest.mark.parametrize(("case", "request_", "revocation_owed", "expected"), [
    ("active, time left", grant(), False, False),
    ("its revocation owed", grant(), True, True),
    ("its end reached, not yet swept", grant(ends_at=NOW), False, True),
    ("its end passed", grant(ends_at=NOW - timedelta(minutes=1)), False, True),
    ("already revoked: ended, not ending", grant(state=State.REVOKED), True, False),
    ("already expired", grant(state=State.EXPIRED, ends_at=NOW), False, False),
], ids=lambda value: value if isinstance(value, str) else "")
def test_what_is_ending(case: str, request_: AccessRequest, revocation_owed: bool,
                        expected: bool) -> None:
    assert ending(request_, NOW, revocation_owed) is expected


@pytest.mark.parametrize(("case", "request_", "actor", "earlier", "refused"), DECIDE_CASES,
                         ids=[c[0] for c in DECIDE_CASES])
def test_who_may_decide(case: str, request_: AccessRequest, actor: Actor,
                        earlier: ReviewDecision | None,
                        refused: type[DomainError] | None) -> None:
    if refused is None:
        check_decide(request_, actor, POLICY, earlier)
        return
    with pytest.raises(refused) as raised:
        check_decide(request_, actor, POLICY, earlier)
    assert "#7" in raised.value.message
    assert "<@" not in raised.value.message  # plain text, escaped whole by the edge


@pytest.mark.parametrize(("listed", "undecided", "carried"), [
    ([1, 2, 3], [], set()),
    ([1, 2, 3], [2], {2}),
    ([1, 2, 3], [2, 4], {2}),  # 4 ended since: not in this week's review
    ([], [1], set()),
])
def test_what_is_carried_over(listed: list[int], undecided: list[int], carried: set[int]) -> None:
    assert carried_over(listed, undecided) == carried


@pytest.mark.parametrize(("item", "status"), [
    (ReviewItem(grant()), ItemStatus.OPEN),
    (ReviewItem(grant(), carried_over=True), ItemStatus.OPEN),
    (ReviewItem(grant(), decision=KEPT), ItemStatus.KEPT),
    (ReviewItem(grant(state=State.REVOKED),
                decision=ReviewDecision(7, Verdict.REVOKE, BOB, NOW)), ItemStatus.REVOKED),
    (ReviewItem(grant(state=State.EXPIRED)), ItemStatus.ENDED),
    (ReviewItem(grant(state=State.REVOKED)), ItemStatus.ENDED),
    (ReviewItem(grant(), ending=True), ItemStatus.ENDED),
    (ReviewItem(grant(), decision=KEPT, ending=True), ItemStatus.KEPT),
])
def test_item_status(item: ReviewItem, status: ItemStatus) -> None:
    assert item.status is status


def test_progress_counts_what_needs_no_decision_any_more() -> None:
    review = AccessReview("2026-11-30T09:00", "C0APPROVE", (
        ReviewItem(grant(id=1)), ReviewItem(grant(id=2), decision=KEPT),
        ReviewItem(grant(id=3, state=State.EXPIRED)), ReviewItem(grant(id=4))))
    assert (review.reviewed, review.total) == (2, 4)
    assert review.progress() == "2 of 4 reviewed"
