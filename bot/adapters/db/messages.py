"""Message references on SQLAlchemy: a row per request, purpose and conversation (the table
names them by Slack's ``channel`` and ``ts``)."""

from __future__ import annotations

import builtins
from collections.abc import Collection

from sqlalchemy import Select, Table, bindparam, select
from sqlalchemy.orm import Session

from bot.adapters.db.among import among_parameter
from bot.adapters.db.models import MessageRow
from bot.domain.model import MessageRef

TABLE: Table = MessageRow.__table__  # type: ignore[assignment]


class SqlAlchemyMessageReferences:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, request_id: int, purpose: str, ref: MessageRef) -> None:
        self.session.merge(self._row(request_id, purpose, ref.conversation) or MessageRow(
            request_id=request_id, purpose=purpose, channel=ref.conversation, ts=ref.message))
        self.session.flush()

    def _row(self, request_id: int, purpose: str, conversation: str) -> MessageRow | None:
        return self.session.scalars(select(MessageRow).where(
            MessageRow.request_id == request_id, MessageRow.purpose == purpose,
            MessageRow.channel == conversation)).one_or_none()

    def list(self, request_id: int, purpose: str) -> builtins.list[MessageRef]:
        return self.list_many([request_id], purpose).get(request_id, [])

    def list_many(self, request_ids: Collection[int],
                  purpose: str) -> dict[int, builtins.list[MessageRef]]:
        found: dict[int, builtins.list[MessageRef]] = {}
        if not request_ids:
            return found
        connection = self.session.connection()
        rows = connection.execute(_LISTED[connection.dialect.name == "postgresql"],
                                  {"request_ids": list(request_ids), "purpose": purpose})
        for row in rows:
            found.setdefault(row.request_id, []).append(MessageRef(row.channel, row.ts))
        return found


def _listed(postgresql: bool) -> Select[tuple[int, str, str]]:
    return (select(TABLE.c.request_id, TABLE.c.channel, TABLE.c.ts)
            .where(among_parameter(postgresql, TABLE.c.request_id, "request_ids"),
                   TABLE.c.purpose == bindparam("purpose"))
            .order_by(TABLE.c.id))


_LISTED = {postgresql: _listed(postgresql) for postgresql in (False, True)}
"""The messages of some requests for one purpose, oldest first; built once (by whether the
database is PostgreSQL), the requests and the purpose given at execution."""
