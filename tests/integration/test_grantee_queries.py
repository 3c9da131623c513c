"""The store finds requests by the person they are for: ``grantee`` (whoever receives the
access, the requester unless asked on someone's behalf) and ``involving`` (filed by or for a
person), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from bot.domain import lifecycle
from bot.domain.model import Actor
from bot.services.context import Context
from tests.conftest import ALICE, BOB, CAROL


def test_requests_are_found_by_whom_they_are_for(ctx: Context) -> None:
    now = ctx.clock()
    # One pending request per grantee and role: Bob asks Alice's on another role.
    filed = [(ALICE, None, "edit"), (BOB, ALICE, "view"), (BOB, None, "edit"),
             (BOB, CAROL, "edit")]
    with ctx.transaction() as uow:
        for requester, grantee, role in filed:
            uow.requests.add(lifecycle.file_request(
                policy=ctx.config.policy("staging", role),
                requester=Actor(requester, is_admin=True),
                grantee=Actor(grantee) if grantee else None, subject="s",
                duration=timedelta(hours=1), reason="r", now=now))
    with ctx.transaction() as uow:
        def ids(**criteria: str) -> list[int | None]:
            return sorted(r.id for r in uow.requests.find(**criteria))  # type: ignore[arg-type]

        assert ids(grantee=ALICE) == [1, 2]
        assert ids(grantee=BOB) == [3]
        assert ids(grantee=CAROL) == [4]
        assert ids(involving=BOB) == [2, 3, 4]
        assert ids(involving=ALICE) == [1, 2]
        assert ids(requester_id=BOB) == [2, 3, 4]
