"""Access reviews on SQLAlchemy: a row per audience and week with its grants, and a row per
grant and week for the decision on it.

Both are made by one statement that skips a duplicate (like the once-only keys), so replicas
and double clicks racing for the same review or decision never fail and only one wins.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.adapters.db.access_requests import _to_request
from bot.adapters.db.models import (
    AccessReviewDecisionRow,
    AccessReviewItemRow,
    AccessReviewRow,
    Base,
    OperationRow,
)
from bot.domain.errors import NotFound
from bot.domain.lifecycle import ending
from bot.domain.model import MessageRef, OperationKind, OperationState
from bot.domain.reviews import AccessReview, ReviewDecision, ReviewItem, Verdict


class SqlAlchemyAccessReviews:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _insert_once(self, row: type[Base], keys: list[str], **values: Any) -> int | None:
        """Insert unless a row with the same ``keys`` exists; the new row's ID, else None."""
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = Base.metadata.tables[row.__tablename__]
        statement = (insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
                     .returning(table.c.id))
        return self.session.execute(statement).scalar_one_or_none()

    def open(self, period: str, audience: str, grants: Sequence[tuple[int, bool]],
             now: datetime) -> tuple[int, bool]:
        review_id = self._insert_once(AccessReviewRow, ["period", "audience"], period=period,
                                      audience=audience, created_at=now)
        if review_id is None:
            return self.session.scalars(select(AccessReviewRow.id).where(
                AccessReviewRow.period == period,
                AccessReviewRow.audience == audience)).one(), False
        if grants:  # one statement for thousands of grants
            self.session.execute(insert(AccessReviewItemRow), [
                {"review_id": review_id, "grant_id": grant_id, "carried_over": carried}
                for grant_id, carried in grants])
        return review_id, True

    def get(self, review_id: int, now: datetime) -> AccessReview:
        row = self.session.get(AccessReviewRow, review_id, populate_existing=True)
        if row is None:
            raise NotFound(f"There is no access review {review_id}.")
        listed = select(AccessReviewItemRow.grant_id).where(
            AccessReviewItemRow.review_id == review_id)
        decisions = {d.grant_id: d for d in self._decisions(row.period, listed)}
        owed = set(self.session.scalars(select(OperationRow.request_id).where(
            OperationRow.kind == OperationKind.REVOKE.value,
            OperationRow.state == OperationState.PENDING.value,
            OperationRow.request_id.in_(listed))))
        items = []
        for item in row.items:
            grant = _to_request(item.grant)
            items.append(ReviewItem(grant, item.carried_over, decisions.get(item.grant_id),
                                    ending(grant, now, item.grant_id in owed)))
        return AccessReview(
            period=row.period, audience=row.audience, id=row.id,
            message=MessageRef(row.channel, row.ts) if row.channel and row.ts else None,
            items=tuple(items))

    def decided(self, review_id: int) -> int:
        listed = select(AccessReviewItemRow.grant_id).where(
            AccessReviewItemRow.review_id == review_id)
        period = select(AccessReviewRow.period).where(
            AccessReviewRow.id == review_id).scalar_subquery()
        return self.session.scalar(select(func.count()).select_from(AccessReviewDecisionRow)
                                   .where(AccessReviewDecisionRow.period == period,
                                          AccessReviewDecisionRow.grant_id.in_(listed))) or 0

    def set_message(self, review_id: int, ref: MessageRef) -> None:
        # One statement: loading the row would load its items (thousands) with it.
        changed = self.session.execute(
            update(AccessReviewRow).where(AccessReviewRow.id == review_id)
            .values(channel=ref.conversation, ts=ref.message)
            .execution_options(synchronize_session=False))
        if not getattr(changed, "rowcount", 0):
            raise NotFound(f"There is no access review {review_id}.")

    def previous_period(self, period: str) -> str | None:
        return self.session.scalars(
            select(AccessReviewRow.period).where(AccessReviewRow.period != period)
            .order_by(AccessReviewRow.id.desc()).limit(1)).first()

    def undecided(self, period: str) -> set[int]:
        decided = select(AccessReviewDecisionRow.grant_id).where(
            AccessReviewDecisionRow.period == period)
        return set(self.session.scalars(
            select(AccessReviewItemRow.grant_id).distinct()
            .join(AccessReviewRow, AccessReviewRow.id == AccessReviewItemRow.review_id)
            .where(AccessReviewRow.period == period,
                   AccessReviewItemRow.grant_id.not_in(decided))))

    def latest_period(self, grant_id: int) -> str | None:
        return self.session.scalars(
            select(AccessReviewRow.period)
            .join(AccessReviewItemRow, AccessReviewRow.id == AccessReviewItemRow.review_id)
            .where(AccessReviewItemRow.grant_id == grant_id)
            .order_by(AccessReviewRow.id.desc()).limit(1)).first()

    def listing(self, period: str, grant_id: int) -> builtins.list[int]:
        return list(self.session.scalars(
            select(AccessReviewRow.id)
            .join(AccessReviewItemRow, AccessReviewRow.id == AccessReviewItemRow.review_id)
            .where(AccessReviewRow.period == period, AccessReviewItemRow.grant_id == grant_id)
            .order_by(AccessReviewRow.id)))

    def decision(self, period: str, grant_id: int) -> ReviewDecision | None:
        row = self.session.scalars(select(AccessReviewDecisionRow).where(
            AccessReviewDecisionRow.period == period,
            AccessReviewDecisionRow.grant_id == grant_id)).one_or_none()
        return _to_decision(row) if row is not None else None

    def decide(self, period: str, decision: ReviewDecision) -> bool:
        return self._insert_once(
            AccessReviewDecisionRow, ["period", "grant_id"], period=period,
            grant_id=decision.grant_id, verdict=decision.verdict.value,
            decided_by=decision.by, decided_at=decision.at) is not None

    def _decisions(self, period: str, grant_ids: Select[Any]
                   ) -> builtins.list[ReviewDecision]:
        """The decisions of ``period`` on the grants ``grant_ids`` selects (a subquery, so
        that a review of thousands of grants needs no list of parameters)."""
        rows = self.session.scalars(select(AccessReviewDecisionRow).where(
            AccessReviewDecisionRow.period == period,
            AccessReviewDecisionRow.grant_id.in_(grant_ids)))
        return [_to_decision(row) for row in rows]


def _to_decision(row: AccessReviewDecisionRow) -> ReviewDecision:
    return ReviewDecision(row.grant_id, Verdict(row.verdict), row.decided_by, row.decided_at)
