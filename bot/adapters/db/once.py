"""Once-only keys on SQLAlchemy: a unique key, inserted by one statement that skips a
duplicate, so that replicas racing for a key never fail and only one of them wins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from bot.adapters.db.models import Base, ClaimedKeyRow


class SqlAlchemyOnceKeys:
    def __init__(self, session: Session) -> None:
        self.session = session

    def claim_key(self, key: str, now: datetime) -> bool:
        return key in self.claim_keys([key], now)

    def claim_keys(self, keys: Sequence[str], now: datetime) -> set[str]:
        """One statement: the keys inserted now, not those claimed before."""
        if not keys:
            return set()
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = Base.metadata.tables[ClaimedKeyRow.__tablename__]
        statement = (insert(table).values([{"key": key, "claimed_at": now} for key in keys])
                     .on_conflict_do_nothing(index_elements=["key"])
                     .returning(table.c.key))
        return set(self.session.scalars(statement))

    def release_key(self, key: str) -> None:
        self.session.execute(delete(ClaimedKeyRow).where(ClaimedKeyRow.key == key))

    def forget_keys(self, claimed_before: datetime) -> int:
        result = self.session.execute(
            delete(ClaimedKeyRow).where(ClaimedKeyRow.claimed_at < claimed_before))
        return int(getattr(result, "rowcount", 0) or 0)
