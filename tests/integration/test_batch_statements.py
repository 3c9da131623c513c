"""The statements built once and given their values at execution (the operation queue's
batches, an operation's lease, the approval messages' lookup, the inbox's claim and
done-marking) do what they did when built for each call, on SQLite and PostgreSQL, batches of
several included, and run again with other values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from bot.adapters.db.inbox import TABLE as INBOX
from bot.adapters.db.inbox import SqlAlchemyInbox
from bot.domain.model import AccessRequest, MessageRef, Operation, OperationKind, OperationState
from bot.services.context import Context
from tests.conftest import ALICE
from tests.fakes.ports import FakeClock


def _filed(ctx: Context, *subjects: str) -> list[int]:
    with ctx.transaction() as uow:
        ids = [uow.requests.add(AccessRequest(
            requester_id=f"{ALICE}{subject}", cluster="staging", role="edit",
            duration=timedelta(hours=2), reason="r", subject=subject,
            created_at=ctx.clock())).id or 0 for subject in subjects]
    return ids


def _owed(ctx: Context, request_id: int, **values: Any) -> Operation:
    return Operation(request_id=request_id, kind=OperationKind.REVOKE,
                     next_attempt_at=ctx.clock(), intent={"event": "expire", "n": request_id},
                     **values)


def test_operations_are_owed_once_in_batches_alike_or_not(ctx: Context) -> None:
    first, second, third = _filed(ctx, "a", "b", "c")
    with ctx.transaction() as uow:
        alike = [Operation(request_id=r, kind=OperationKind.REVOKE, next_attempt_at=ctx.clock(),
                           intent={"event": "expire"}) for r in (first, second)]
        assert uow.operations.enqueue_many(alike) == alike
        assert all(operation.id is not None for operation in alike)
    with ctx.transaction() as uow:  # one owed already, one new, one of another kind
        again = [_owed(ctx, first), _owed(ctx, third),
                 Operation(request_id=second, kind=OperationKind.GRANT,
                           next_attempt_at=ctx.clock(), intent={"why": "x"})]
        owed = uow.operations.enqueue_many(again)
        assert [(o.request_id, o.kind) for o in owed] == [
            (third, OperationKind.REVOKE), (second, OperationKind.GRANT)]
        assert again[0].id is None
    with ctx.transaction() as uow:
        stored = uow.operations.get(third, OperationKind.REVOKE)
        assert stored is not None and stored.intent == {"event": "expire", "n": third}
        assert uow.operations.get(second, OperationKind.GRANT) is not None
        assert uow.operations.enqueue_many([]) == []


def test_leases_are_renewed_and_finished_only_under_their_owner(
        ctx: Context, clock: FakeClock) -> None:
    ids = _filed(ctx, "a", "b", "c")
    now = clock()
    with ctx.transaction() as uow:
        owed = uow.operations.enqueue_many([_owed(ctx, r) for r in ids])
    mine, theirs, lapsed = (o.id or 0 for o in owed)
    with ctx.transaction() as uow:
        assert uow.operations.claim(mine, "me", now, now + timedelta(minutes=1))
        assert uow.operations.claim(theirs, "them", now, now + timedelta(minutes=1))
        assert uow.operations.claim(lapsed, "me", now, now + timedelta(minutes=1))
    later = now + timedelta(minutes=5)
    with ctx.transaction() as uow:
        assert uow.operations.renew_many([mine, theirs, lapsed], "me", later) == {mine, lapsed}
        assert uow.operations.renew_many([], "me", later) == set()
        assert uow.operations.finish_many([mine, theirs], "me") == {mine}
        assert uow.operations.finish_many([mine], "me") == set()  # done: no longer pending
        assert uow.operations.finish_many([theirs], "them") == {theirs}
    with ctx.transaction() as uow:
        done = uow.operations.get(ids[0], OperationKind.REVOKE)
        held = uow.operations.get(ids[2], OperationKind.REVOKE)
        assert done is not None and done.state is OperationState.DONE
        assert done.lease_owner is None and done.lease_until is None
        assert held is not None and held.state is OperationState.PENDING
        assert held.lease_owner == "me" and held.lease_until == later


def test_approval_messages_of_several_requests_oldest_first(ctx: Context) -> None:
    first, second, third = _filed(ctx, "a", "b", "c")
    with ctx.transaction() as uow:
        uow.messages.add(first, "approval", MessageRef("C1", "1.1"))
        uow.messages.add(second, "approval", MessageRef("D2", "2.1"))
        uow.messages.add(first, "approval", MessageRef("D1", "1.2"))
        uow.messages.add(first, "review", MessageRef("C9", "9.9"))
    with ctx.transaction() as uow:
        assert uow.messages.list_many([first, second, third], "approval") == {
            first: [MessageRef("C1", "1.1"), MessageRef("D1", "1.2")],
            second: [MessageRef("D2", "2.1")]}
        assert uow.messages.list(first, "review") == [MessageRef("C9", "9.9")]
        assert uow.messages.list(third, "approval") == []
        assert uow.messages.list_many([], "approval") == {}


def test_the_inbox_claims_up_to_its_limit_and_marks_done(engine: Engine, ctx: Context,
                                                          clock: FakeClock) -> None:
    inbox = SqlAlchemyInbox(engine, clock, lease=timedelta(minutes=10),
                            keep_done=timedelta(minutes=10))
    try:
        for n in range(3):
            assert inbox.receive(f"k{n}", f'{{"n": {n}}}')
            clock.advance(timedelta(seconds=1))
        assert [e.key for e in inbox.claim("w", 2)] == ["k0", "k1"]
        assert [e.key for e in inbox.claim("w", 2)] == ["k2"]
        assert inbox.claim("w", 2) == []
        inbox.done("k0")
        with ctx.transaction() as uow:
            inbox.done_in(uow, "k1")
        with pytest.raises(RuntimeError), ctx.transaction() as uow:  # rolled back
            inbox.done_in(uow, "k2")
            raise RuntimeError("the use case failed")
        clock.advance(timedelta(minutes=11))  # the leases lapse
        again = inbox.claim("w", 5)
        assert [(e.key, e.body, e.attempts) for e in again] == [("k2", '{"n": 2}', 2)]
        with engine.connect() as connection:
            rows = {row.key: row for row in connection.execute(select(INBOX))}
        assert rows["k0"].done_at is not None and rows["k0"].body is None
        assert rows["k1"].done_at is not None and rows["k1"].lease_until is None
        assert rows["k2"].done_at is None
    finally:
        inbox.close()
