"""Access review decisions racing on the shared database: many reviewers at the same instant,
Keep against Revoke, several replicas posting the same week's review: one decision, one
attestation, one review."""

from __future__ import annotations

import csv
import io
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from bot.adapters.db.reviews import SqlAlchemyAccessReviews
from bot.domain.errors import DomainError, InvalidTransition, NotAuthorized, NotFound, Undeliverable
from bot.domain.model import MessageRef, State
from bot.domain.reviews import AccessReview
from bot.services import access, grants, reminders, reviews
from bot.services import audit as audit_service
from bot.services.context import Context
from tests.conftest import ADMIN, ALICE, APPROVER_GROUP, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory

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


# --- a grant whose access is ending, refused; the review shows it ended -------------------

STRANGER = "U0ERIN005"


def shown(notifier: RecordingNotifier) -> set[str]:
    """The progress each posted review message shows now."""
    with notifier.lock:
        return set(notifier.shown.values())


def test_keep_is_refused_for_a_grant_being_revoked_and_the_review_shows_it_ended(
        ctx: Context, granter: InMemoryGranter, notifier: RecordingNotifier) -> None:
    grant = reviewed_grant(ctx)
    # The grantee revokes it; the backend fails, so the revocation is owed and retried while
    # the grant is still active.
    granter.fail_next.append(ConnectionError("cluster unreachable"))
    assert grants.revoke(ctx, grant, ALICE, "done").state is State.ACTIVE

    with pytest.raises(InvalidTransition, match="already ending"):
        reviews.keep(ctx, grant, BOB)
    with pytest.raises(InvalidTransition, match="already ending"):
        reviews.revoke(ctx, grant, DAVE)
    assert attested(ctx, grant) == 0
    with ctx.transaction() as uow:
        period = uow.reviews.latest_period(grant)
        assert period is not None and uow.reviews.decision(period, grant) is None
    assert shown(notifier) == {"1 of 1 reviewed"}  # both audiences' messages


def test_keep_is_refused_for_a_grant_whose_time_is_up(
        ctx: Context, clock: FakeClock, notifier: RecordingNotifier) -> None:
    grant = reviewed_grant(ctx)
    clock.advance(timedelta(hours=1))  # its end; the expiry sweep has not run yet
    assert grants.get(ctx, grant).state is State.ACTIVE

    with pytest.raises(InvalidTransition, match="already ending"):
        reviews.keep(ctx, grant, BOB)
    assert attested(ctx, grant) == 0
    assert shown(notifier) == {"1 of 1 reviewed"}


# --- who may not decide hears that first ----------------------------------------------------


def test_someone_who_may_not_review_learns_nothing_of_the_grants_review(
        ctx: Context, clock: FakeClock) -> None:
    grant = reviewed_grant(ctx)
    reviews.keep(ctx, grant, BOB)
    late = access.file_request(ctx, CAROL, "staging", "view", duration=timedelta(hours=1))
    assert late.id is not None  # in no review yet
    for user in (STRANGER, ALICE):  # an outsider, and the grantee
        for grant_id in (grant, late.id):  # decided; in no review
            with pytest.raises(NotAuthorized):
                reviews.keep(ctx, grant_id, user)
            with pytest.raises(NotAuthorized):
                reviews.revoke(ctx, grant_id, user)
    with pytest.raises(NotFound):  # an approver is told what stands
        reviews.keep(ctx, late.id, BOB)
    with pytest.raises(InvalidTransition, match="already reviewed"):
        reviews.keep(ctx, grant, DAVE)


# --- progress racing: two reviewers decide at the same moment ------------------------------


def test_two_decisions_at_once_leave_the_message_showing_both(
        ctx: Context, notifier: RecordingNotifier, directory: StaticDirectory) -> None:
    """Bob keeps one grant and Dave the other. Bob's update of the message reads before
    Dave's decision commits and reaches Slack after Dave's: without reading again after it,
    the message would stay at Bob's stale "1 of 2"."""
    first = access.file_request(ctx, ALICE, "staging", "view", duration=timedelta(hours=1))
    second = access.file_request(ctx, CAROL, "staging", "view", duration=timedelta(hours=1))
    assert first.id is not None and second.id is not None
    directory.groups[APPROVER_GROUP] = set()  # Bob's review only: one message
    assert reminders.weekly(ctx) >= 1
    update = notifier.update_review
    interleaved = threading.Event()

    def slow_update(review: AccessReview) -> None:
        if review.progress() == "1 of 2 reviewed" and not interleaved.is_set():
            interleaved.set()  # Dave decides, and updates, while Bob's update is on its way
            racer = threading.Thread(target=reviews.keep, args=(ctx, second.id, ADMIN))
            racer.start()
            racer.join()
            assert shown(notifier) == {"2 of 2 reviewed"}
        update(review)

    notifier.update_review = slow_update  # type: ignore[method-assign]
    review = reviews.keep(ctx, first.id, BOB)

    assert interleaved.is_set()
    assert shown(notifier) == {"2 of 2 reviewed"}
    assert review is not None and review.progress() == "2 of 2 reviewed"


def test_many_decisions_at_once_leave_the_message_complete(
        ctx: Context, notifier: RecordingNotifier, directory: StaticDirectory) -> None:
    directory.groups[APPROVER_GROUP] = set()
    ids = []
    for n in range(6):
        grantee = f"U0GRANT{n:03d}"
        directory.emails[grantee] = f"{grantee.lower()}@example.com"
        grant = access.file_request(ctx, grantee, "staging", "view",
                                    duration=timedelta(hours=1))
        assert grant.id is not None
        ids.append(grant.id)
    assert reminders.weekly(ctx) >= 1
    outcomes = race([lambda g=g: reviews.keep(ctx, g, BOB) for g in ids])  # type: ignore[misc]
    assert outcomes == Counter({"decided": len(ids)}), outcomes
    assert shown(notifier) == {f"{len(ids)} of {len(ids)} reviewed"}


def test_a_database_failing_after_the_decision_leaves_keep_and_revoke_standing(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision committed; reading the review again to show it fails: the reviewer hears
    the decision was recorded (without the progress), never an error."""
    other = access.file_request(ctx, CAROL, "staging", "view", duration=timedelta(hours=1))
    kept = reviewed_grant(ctx)
    assert other.id is not None

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the database went away")

    monkeypatch.setattr(SqlAlchemyAccessReviews, "listing", gone)
    assert reviews.keep(ctx, kept, BOB) is None
    revoked, review = reviews.revoke(ctx, other.id, BOB)
    assert revoked.state is State.REVOKED and review is None
    assert attested(ctx, kept) == 1


# --- each review message posted once --------------------------------------------------------


def test_a_review_whose_attachment_failed_is_updated_not_posted_again(
        ctx: Context, notifier: RecordingNotifier, clock: FakeClock) -> None:
    grant = access.file_request(ctx, ALICE, "staging", "view", duration=timedelta(hours=1))
    assert grant.id is not None
    attach = notifier.review_attachment
    failures = [Undeliverable("Slack is down", recipient=BOB, error="service_unavailable",
                              kind=Undeliverable.TEMPORARY)]

    def flaky(review: AccessReview, admins: Any = ()) -> None:
        if review.audience == BOB and failures:
            raise failures.pop()
        attach(review, admins)

    notifier.review_attachment = flaky  # type: ignore[method-assign]
    assert reminders.weekly(ctx) == 2  # Alice's weekly DM and Dave's review
    reviews.keep(ctx, grant.id, DAVE)
    clock.advance(timedelta(minutes=1))
    assert reminders.weekly(ctx) == 1  # Bob's review, now complete
    assert reminders.weekly(ctx) == 0
    assert sorted(audience for audience, _ in notifier.reviews) == [BOB, DAVE]  # once each
    assert sorted(notifier.attachments) == [BOB, DAVE]
    assert shown(notifier) == {"1 of 1 reviewed"}  # Bob's was brought up to date


def test_the_attestations_export_names_grantee_and_reviewer_in_cells_no_spreadsheet_runs(
        ctx: Context, directory: StaticDirectory) -> None:
    directory.emails[CAROL] = "=HYPERLINK(\"https://evil.example\")@example.com"
    request = access.file_request(ctx, CAROL, "staging", "view", duration=timedelta(hours=1),
                                  reason="+1 for the incident")
    assert request.id is not None and reminders.weekly(ctx) >= 1
    reviews.keep(ctx, request.id, BOB)

    exported = "".join(audit_service.export(ctx, fmt="csv", attestations=True))
    [row] = list(csv.DictReader(io.StringIO(exported, newline="")))
    assert (row["grantee"], row["kept_by"]) == (CAROL, BOB)
    assert row["subject"] == "'" + directory.emails[CAROL]
    everything = "".join(audit_service.export(ctx, fmt="csv"))
    for line in csv.reader(io.StringIO(everything, newline="")):
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in line), line


def test_where_a_review_was_posted_is_remembered_without_loading_its_grants(
        ctx: Context, engine: Any) -> None:
    """One statement on the review's own row: its items (thousands, in a large workspace)
    are not read to set it; a review that is not there is not found."""
    reviewed_grant(ctx)
    with engine.connect() as connection:
        review_id = connection.exec_driver_sql(
            "SELECT id FROM access_reviews ORDER BY id DESC").scalars().first()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with ctx.transaction() as uow:
            uow.reviews.set_message(review_id, MessageRef("C0MOVED", "42.1"))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    ours = [s for s in statements if "ACCESS_REVIEW" in s]
    assert len(ours) == 1 and ours[0].startswith("UPDATE ACCESS_REVIEWS"), ours
    with ctx.transaction() as uow:
        assert uow.reviews.get(review_id, ctx.clock()).message == MessageRef("C0MOVED", "42.1")
        with pytest.raises(NotFound):
            uow.reviews.set_message(review_id + 1000, MessageRef("C0MOVED", "42.2"))
