"""Identity links on SQLAlchemy: one row per person and provider."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.adapters.db.models import IdentityLinkRow
from bot.domain.model import IdentityLink


class SqlAlchemyIdentityLinks:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, slack_user_id: str, provider: str) -> IdentityLink | None:
        row = self.session.get(IdentityLinkRow, (slack_user_id, provider))
        if row is None:
            return None
        return IdentityLink(
            slack_user_id=row.slack_user_id,
            provider=row.provider,
            username=row.username,
            confirmed=row.confirmed,
            created_at=row.created_at,
            confirmed_by=row.confirmed_by,
        )

    def save(self, link: IdentityLink) -> None:
        self.session.merge(
            IdentityLinkRow(
                slack_user_id=link.slack_user_id,
                provider=link.provider,
                username=link.username,
                confirmed=link.confirmed,
                created_at=link.created_at,
                confirmed_by=link.confirmed_by,
            )
        )
        self.session.flush()
