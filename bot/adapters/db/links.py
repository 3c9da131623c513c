"""Identity links on SQLAlchemy: one row per person and provider."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.adapters.db.mapping import Columns
from bot.adapters.db.models import IdentityLinkRow
from bot.domain.model import IdentityLink

LINK = Columns(IdentityLink, "slack_user_id", "provider", "username", "confirmed", "created_at",
               "confirmed_by")


class SqlAlchemyIdentityLinks:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, slack_user_id: str, provider: str) -> IdentityLink | None:
        row = self.session.get(IdentityLinkRow, (slack_user_id, provider))
        if row is None:
            return None
        return LINK.load(row)

    def save(self, link: IdentityLink) -> None:
        self.session.merge(IdentityLinkRow(**LINK.values(link)))
        self.session.flush()
