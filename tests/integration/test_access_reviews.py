"""Access review decisions racing on the shared database: many reviewers at the same instant,
Keep against Revoke, several replicas posting the same week's review: one decision, one
attestation, one review."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from bot.domain.errors import DomainError
from bot.domain.model import State
from bot.domain.reviews import AccessReview
from bot.services import access, grants, reminders, reviews
from bot.services.context import Context
from tests.conftest import ADMIN, ALICE, APPROVER_GROUP, BOB, DAVE
from tests.fakes.ports import InMemoryGranter, RecordingNotifier, StaticDirectory

ATTEMPTS = 20


def reviewed_grant(ctx: Context) -> int:
    request = access.file_request(ctx, ALICE, "staging", "view", duration=timedelta(hours=1))
    assert request.id is not None and request.state is State.ACTIVE
    assert reminders.weekly(ctx) >= 1
    return request.id


def race(clicks: list[Callable[[], object]]) -> Counter[str]:
    barrier = threading.Barrier(len(clicks))

    def click(action: Callable[[], object]) -> str:
        barrier.wait()
        try:
            action()
            return "decided"
        except DomainError as error:
            return type(error).__name__

    with ThreadPoolExecutor(max_workers=len(clicks)) as pool:
        return Counter(pool.map(click, clicks))


def attested(ctx: Context, grant_id: int) -> int:
    with ctx.transaction() as uow:
        return sum(e.action == "attested" and e.request_id == grant_id
                   for e in uow.audit.events())


def test_many_reviewers_keep_at_once_and_one_attestation_is_recorded(
        ctx: Context, directory: StaticDirectory) -> None:
    reviewers = [f"U0RACE{n:04d}" for n in range(ATTEMPTS)]
    directory.groups[APPROVER_GROUP] = set(reviewers)
    grant = reviewed_grant(ctx)

    outcomes = race([lambda r=r: reviews.keep(ctx, grant, r) for r in reviewers])  # type: ignore[misc]

    assert outcomes == Counter({"decided": 1, "InvalidTransition": ATTEMPTS - 1}), outcomes
    assert attested(ctx, grant) == 1


def test_keep_against_revoke_decides_once(ctx: Context, granter: InMemoryGranter) -> None:
    grant = reviewed_grant(ctx)

    outcomes = race([lambda: reviews.keep(ctx, grant, BOB),
                     lambda: reviews.revoke(ctx, grant, ADMIN)] * 5)

    assert outcomes["decided"] == 1, outcomes
    revoked = grants.get(ctx, grant).state is State.REVOKED
    assert attested(ctx, grant) == (0 if revoked else 1)
    assert granter.calls["revoke"] == (1 if revoked else 0)


def test_replicas_posting_the_same_review_make_one(ctx: Context,
                                                    notifier: RecordingNotifier) -> None:
    access.file_request(ctx, ALICE, "staging", "view", duration=timedelta(hours=1))
    outcomes = race([lambda: reminders.weekly(ctx)] * 3)
    assert outcomes == Counter({"decided": 3})
    assert sorted(audience for audience, _ in notifier.reviews) == sorted(
        {audience for audience, _ in notifier.reviews})  # each audience once
    with ctx.transaction() as uow:
        period = uow.reviews.latest_period(1)
        assert period is not None
        assert len(uow.reviews.listing(period, 1)) == len(notifier.reviews)


def test_a_review_that_could_not_be_posted_is_posted_as_stored_next_time(
        ctx: Context, notifier: RecordingNotifier) -> None:
    """Staging has no channel: Bob and Dave each get a review. One cannot be posted; a
    decision comes in meanwhile; the next pass posts that review as stored, decision shown."""
    grant = access.file_request(ctx, ALICE, "staging", "view", duration=timedelta(hours=1))
    assert grant.id is not None
    failures = iter([ConnectionError("Slack unreachable")])
    posted: list[AccessReview] = []

    def flaky(review: AccessReview, admins: Any = ()) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        posted.append(review)

    notifier.review = flaky  # type: ignore[method-assign]
    assert reminders.weekly(ctx) == 2  # Alice's weekly DM and one of the reviews
    assert [r.progress() for r in posted] == ["0 of 1 reviewed"]
    reviews.keep(ctx, grant.id, BOB)
    assert reminders.weekly(ctx) == 1
    assert [r.progress() for r in posted] == ["0 of 1 reviewed", "1 of 1 reviewed"]
    assert {r.audience for r in posted} == {BOB, DAVE}
    assert reminders.weekly(ctx) == 0
