"""Every record the stores keep comes back as it went in, on SQLite and PostgreSQL: each
attribute a record compares by has a column (a new attribute without one fails here), and a
request with every attribute set to something other than its default survives the round trip."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from bot.adapters.db.access_requests import APPROVAL, REQUEST
from bot.adapters.db.audit import EVENT
from bot.adapters.db.links import LINK
from bot.adapters.db.mapping import Columns
from bot.adapters.db.operations import OPERATION
from bot.domain.model import (
    AccessRequest,
    Approval,
    AuditEvent,
    Decision,
    IdentityLink,
    Kind,
    Operation,
    OperationKind,
    OperationState,
    State,
)
from bot.services.context import Context
from tests.conftest import ALICE, BOB, CAROL


def _filed(ctx: Context) -> AccessRequest:
    with ctx.transaction() as uow:
        return uow.requests.add(AccessRequest(
            requester_id=ALICE, cluster="staging", role="edit", duration=timedelta(hours=2),
            reason="r", subject="alice", created_at=ctx.clock()))


@pytest.mark.parametrize(("columns", "record", "kept_elsewhere"), [
    (REQUEST, AccessRequest, {"approvals"}),
    (APPROVAL, Approval, set()),
    (OPERATION, Operation, set()),
    (EVENT, AuditEvent, set()),
    (LINK, IdentityLink, set()),
], ids=lambda value: getattr(value, "__name__", ""))
def test_every_attribute_of_a_record_has_a_column(
        columns: Columns[object], record: type, kept_elsewhere: set[str]) -> None:
    compared = {f.name for f in dataclasses.fields(record) if f.compare}
    assert columns.attributes | kept_elsewhere == compared


def test_a_request_comes_back_as_it_was_stored(ctx: Context) -> None:
    now = ctx.clock()
    grant = _filed(ctx)
    every = AccessRequest(
        requester_id=BOB, cluster="prod", role="view", duration=timedelta(minutes=90),
        reason="why", subject="bob@example.com", created_at=now - timedelta(hours=1),
        state=State.ACTIVE,
        kind=Kind.EXTENSION, namespace="team-a", parent_id=grant.id, break_glass=True,
        approved_by_policy=True, decided_at=now + timedelta(seconds=1),
        activated_at=now + timedelta(seconds=2), ends_at=now + timedelta(hours=3),
        ended_at=now + timedelta(hours=4), ended_by=CAROL, end_reason="done",
        last_error="boom", user_csr="CSR", grantee_id=CAROL,
        window_start=now + timedelta(days=1), escalations_applied=2, renotified=3,
        approvals=[Approval(ALICE, Decision.APPROVE, now, "ok", timedelta(hours=1)),
                   Approval(CAROL, Decision.DENY, now, "no")],
        backend_ref={"binding": "b", "nested": {"n": 1}})
    defaults = AccessRequest(requester_id="", cluster="", role="", duration=timedelta(),
                             reason="", subject="", created_at=now)
    assert all(getattr(every, name) != getattr(defaults, name)
               for name in REQUEST.attributes - {"id", "version"} | {"approvals"})
    with ctx.transaction() as uow:
        uow.requests.add(every)
    with ctx.transaction() as uow:
        assert uow.requests.get(every.id or 0) == every


def test_an_operation_comes_back_as_it_was_stored(ctx: Context) -> None:
    now = ctx.clock()
    request = _filed(ctx)
    assert request.id is not None
    with ctx.transaction() as uow:
        operation = Operation(
            request_id=request.id, kind=OperationKind.REVOKE, next_attempt_at=now,
            state=OperationState.FAILED, attempts=3, intent={"by": BOB}, prepared={"had": 1},
            lease_owner="w", lease_until=now + timedelta(minutes=1), last_error="e")
        assert uow.operations.enqueue(operation)
    with ctx.transaction() as uow:
        assert uow.operations.get(request.id, OperationKind.REVOKE) == operation


def test_a_request_saved_by_its_id_is_read_afresh_by_a_list_in_the_same_transaction(
        ctx: Context) -> None:
    """A request read by its ID is saved without the ORM: a row the ORM held for it (read in a
    batch) is dropped, so that a later list reads the saved state, not the copy."""
    filed = _filed(ctx)
    assert filed.id is not None
    with ctx.transaction() as uow:
        assert [r.state for r in uow.requests.get_many([filed.id])] == [State.PENDING]
        request = uow.requests.get(filed.id, for_update=True)
        request.state = State.DENIED
        request.approvals.append(Approval(BOB, Decision.DENY, ctx.clock()))
        uow.requests.save(request)
        found = uow.requests.find(requester_id=ALICE)
    assert [(r.state, [a.approver_id for a in r.approvals]) for r in found] == [
        (State.DENIED, [BOB])]
    with ctx.transaction() as uow:
        again = uow.requests.get(filed.id)
    assert (again.state, again.version, again.approvals) == (
        State.DENIED, request.version, request.approvals)


def test_audit_events_are_read_back_in_their_own_transaction_in_order(ctx: Context) -> None:
    """Events are inserted together at the commit; reading them first inserts those kept."""
    filed = _filed(ctx)
    with ctx.transaction() as uow:
        for action in ("first", "second"):
            uow.audit.record(AuditEvent(at=ctx.clock(), actor=ALICE, action=action,
                                        request_id=filed.id, details={"n": action}))
        assert [e.action for e in uow.audit.events()] == ["first", "second"]
    with ctx.transaction() as uow:
        uow.audit.record(AuditEvent(at=ctx.clock(), actor=ALICE, action="third",
                                    request_id=filed.id))
    with ctx.transaction() as uow:
        assert [e.action for e in uow.audit.events()] == ["first", "second", "third"]
