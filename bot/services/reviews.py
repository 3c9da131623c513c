"""Access reviews that record decisions: the weekly review of each audience is stored with its
grants before it is posted, and each Keep or Revoke is recorded once per grant and week, then
shown in place in every review message that lists the grant.

Keep writes an ``attested`` audit event (and so reaches the audit stream's outbox); Revoke owes
the revocation (:func:`bot.services.grants.revoke_as`) in the same transaction as the decision.
The rules are :mod:`bot.domain.reviews`'. A grant nobody decided is carried into next week's
review and counted (``Metrics.review_unreviewed``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from bot.domain import lifecycle
from bot.domain import reviews as rules
from bot.domain.errors import InvalidTransition, NotFound, Undeliverable
from bot.domain.model import AccessRequest, Actor
from bot.domain.ports import UnitOfWork
from bot.domain.reviews import AccessReview, ReviewDecision, ReviewItem, Verdict
from bot.services import grants, operations
from bot.services.context import Context, audit

log = logging.getLogger(__name__)
T = TypeVar("T")

REVOKE_REASON = "revoked in the access review"
ATTESTED = "attested"
"""The audit action of a Keep (SPEC "Integrations")."""


def post(ctx: Context, period: str, audience: str, active: Sequence[AccessRequest],
         admins: Sequence[str] = (),
         refused: Callable[[Undeliverable], None] | None = None) -> None:
    """Post ``audience``'s review of ``period``: stored first with its grants (those nobody
    decided last week flagged as carried over), unless an earlier attempt stored it, then
    posted, and where it went remembered at once; then its attachment (all the grants as a
    file, when it has more than it shows). A message an earlier attempt posted is updated in
    place, never posted again: a retry after the attachment failed posts only the
    attachment. Raises what the notifier raises (the message's failure first); a message
    refused for its recipient (a channel the bot cannot post to) goes to ``refused`` instead
    when given, which decides what follows (nothing more is sent there)."""
    listed = {grant.id: grant for grant in active if grant.id is not None}
    with ctx.transaction() as uow:
        carried = rules.carried_over(listed, _undecided_last_time(uow, period))
        review_id, made = uow.reviews.open(period, audience,
                                           [(i, i in carried) for i in listed], ctx.clock())
        # As just made: the grants at hand, none decided yet; else as an earlier pass left it.
        review = AccessReview(period, audience, tuple(
            ReviewItem(grant, i in carried) for i, grant in listed.items()), review_id) \
            if made else uow.reviews.get(review_id, ctx.clock())
    invalid: Undeliverable | None = None
    if review.message is not None:
        ctx.notifier.update_review(review)
    else:
        try:
            ref = ctx.notifier.review(review, admins)
        except Undeliverable as error:
            if error.kind == Undeliverable.RECIPIENT and refused is not None:
                refused(error)  # the attachment would meet the same recipient
                return
            if error.kind != Undeliverable.INVALID:
                raise  # the attachment would meet the same recipient or outage
            invalid = error
        else:
            if ref is not None:
                with ctx.transaction() as uow:
                    uow.reviews.set_message(review_id, ref)
    ctx.notifier.review_attachment(review, admins)
    if invalid is not None:
        raise invalid


def count_unreviewed(ctx: Context, period: str, active: Sequence[AccessRequest]) -> None:
    """Tell the metrics, per cluster, how many active grants the review before ``period`` left
    undecided (each replica that runs the weekly pass reads the same)."""
    with ctx.transaction() as uow:
        undecided = _undecided_last_time(uow, period)
    counts = Counter(grant.cluster for grant in active if grant.id in undecided)
    for cluster in ctx.config.clusters:
        ctx.metrics.review_unreviewed(cluster, counts[cluster])


def _undecided_last_time(uow: UnitOfWork, period: str) -> set[int]:
    previous = uow.reviews.previous_period(period)
    return uow.reviews.undecided(previous) if previous is not None else set()


def keep(ctx: Context, grant_id: int, user_id: str) -> AccessReview | None:
    """Keep the grant: an attestation by ``user_id`` in its latest review, recorded once.
    Returns a review that lists it, as it stands now. :class:`NotAuthorized`,
    :class:`InvalidTransition` and :class:`NotFound` refuse it (see
    :func:`bot.domain.reviews.check_decide`), changing nothing; a grant refused as ended (or
    decided) is shown so in its review messages."""
    actor = ctx.actor(user_id)

    def attest() -> str:
        now = ctx.clock()
        with ctx.transaction() as uow:
            grant = uow.requests.get(grant_id, for_update=True)
            period = _decide(ctx, uow, grant, actor, Verdict.KEEP, now)
            audit(uow.audit, now, actor.user_id, ATTESTED, grant, period=period,
                  cluster=grant.cluster, role=grant.role, namespace=grant.namespace,
                  grantee=grant.grantee, subject=grant.subject,
                  ends_at=grant.ends_at.isoformat() if grant.ends_at else None)
        return period

    return refresh(ctx, _shown_if_refused(ctx, grant_id, attest), grant_id)


def revoke(ctx: Context, grant_id: int, user_id: str) -> tuple[AccessRequest,
                                                             AccessReview | None]:
    """Revoke the grant as the decision of its latest review (refused as :func:`keep` is);
    the grant as the revocation left it, and a review that lists it."""
    actor = ctx.actor(user_id)
    periods: list[str] = []

    def decide(uow: UnitOfWork, grant: AccessRequest) -> None:
        periods.append(_decide(ctx, uow, grant, actor, Verdict.REVOKE, ctx.clock()))

    revoked = _shown_if_refused(
        ctx, grant_id, lambda: grants.revoke_as(ctx, grant_id, actor, REVOKE_REASON,
                                                also=decide))
    return revoked, refresh(ctx, periods[-1], grant_id)


def _shown_if_refused(ctx: Context, grant_id: int, decide: Callable[[], T]) -> T:
    """``decide``; when it is refused as too late (the grant ended, is ending, or was
    decided), the grant's latest review messages are brought up to date before the refusal
    is raised, so that they show why."""
    try:
        return decide()
    except InvalidTransition:
        with ctx.transaction() as uow:
            period = uow.reviews.latest_period(grant_id)
        if period is not None:
            refresh(ctx, period, grant_id)
        raise


def _decide(ctx: Context, uow: UnitOfWork, grant: AccessRequest, actor: Actor,
            verdict: Verdict, now: datetime) -> str:
    """Check and record ``actor``'s decision in the grant's latest review; its period. Who
    may decide is checked before anything about the grant's review is looked at."""
    assert grant.id is not None
    policy = ctx.config.policy(grant.cluster, grant.role)
    rules.check_reviewer(grant, actor, policy)
    period = uow.reviews.latest_period(grant.id)
    if period is None:
        raise NotFound(f"Grant {grant.label} is in no access review.")
    rules.check_decide(grant, actor, policy, uow.reviews.decision(period, grant.id),
                       is_ending=lifecycle.ending(
                           grant, now, operations.owes_revocation(uow.operations, grant)))
    if not uow.reviews.decide(period, ReviewDecision(grant.id, verdict, actor.user_id, now)):
        raise InvalidTransition(f"Grant {grant.label} was already reviewed this week.")
    return period


def refresh(ctx: Context, period: str, grant_id: int) -> AccessReview | None:
    """Show the review of ``period`` as the database has it in every message that lists the
    grant; the first of them, as shown.

    Decisions on one review race (two reviewers at the same moment): each reads after its
    own commit, but their updates may reach the message in either order, the older last.
    So after updating, each counts the review's decisions again (a cheap count that only
    grows) and, while the count moved, reads and updates again: whoever's update comes last
    has seen every decision committed before it. A message that cannot be updated is logged;
    the decision stands. So does one whose review cannot be read again (None then: the next
    decision shows it)."""
    try:
        return _refresh(ctx, period, grant_id)
    except Exception:
        log.exception("the access review %s was not shown again after a decision on grant "
                      "#%s", period, grant_id)
        return None


def _refresh(ctx: Context, period: str, grant_id: int) -> AccessReview | None:
    with ctx.transaction() as uow:
        listing = uow.reviews.listing(period, grant_id)
        found = [uow.reviews.get(review_id, ctx.clock()) for review_id in listing]
    first: AccessReview | None = found[0] if found else None
    for review in found:
        while review.message is not None and review.id is not None:
            try:
                ctx.notifier.update_review(review)
            except Exception:
                log.exception("the access review %s for %s was not updated", review.period,
                              review.audience)
            shown = sum(item.decision is not None for item in review.items)
            with ctx.transaction() as uow:
                if uow.reviews.decided(review.id) == shown:
                    break
                review = uow.reviews.get(review.id, ctx.clock())
            if review.id == (first.id if first else None):
                first = review
    return first
