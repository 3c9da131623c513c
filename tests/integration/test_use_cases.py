"""Use cases over the real store (SQLite or PostgreSQL) with an in-memory backend and notifier."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from bot.domain.errors import (
    InvalidInput,
    InvalidTransition,
    NotAuthorized,
    NotFound,
    PolicyViolation,
)
from bot.domain.model import Kind, Operation, OperationKind, OperationState, State
from bot.domain.ports import NoticeKind
from bot.services import access, grants, operations
from bot.services import audit as audit_service
from bot.services.context import Context
from tests.conftest import ADMIN, ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, permanent, temporary

H = timedelta(hours=1)


def actions(ctx: Context, request_id: int) -> list[str]:
    with ctx.transaction() as uow:
        return [e.action for e in uow.audit.events() if e.request_id == request_id]


def file_edit(ctx: Context, **kwargs: object) -> int:
    arguments: dict[str, object] = {"duration": 2 * H, "reason": "deploy hotfix"}
    arguments.update(kwargs)
    request = access.file_request(ctx, ALICE, "staging", "edit", **arguments)  # type: ignore[arg-type]
    assert request.id is not None
    return request.id


def test_request_approve_revoke(ctx: Context, granter: InMemoryGranter,
                                notifier: RecordingNotifier, clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    filed = grants.get(ctx, request_id)
    assert filed.state is State.PENDING
    assert filed.subject == "u0alice01@example.com"
    assert notifier.kinds(request_id) == [NoticeKind.FILED]

    clock.advance(10 * timedelta(minutes=1))
    active = access.approve(ctx, request_id, BOB, "ok")
    assert active.state is State.ACTIVE
    assert active.activated_at == clock.now
    assert active.ends_at == clock.now + 2 * H
    assert active.backend_ref == {"binding": f"k8s-access-{request_id}"}
    assert granter.calls["granted"] == 1
    assert request_id in granter.active
    sent = [n for n in notifier.notices if n.kind is NoticeKind.ACTIVE]
    assert sent[0].delivery is not None and sent[0].delivery.filename == "kubeconfig.yaml"

    listing = access.list_requests(ctx, ALICE, "mine")
    assert [r.id for r in listing.requests] == [request_id]

    revoked = grants.revoke(ctx, request_id, ALICE, "done early")
    assert revoked.state is State.REVOKED
    assert (revoked.ended_by, revoked.end_reason) == (ALICE, "done early")
    assert request_id not in granter.active
    assert notifier.kinds(request_id) == [
        NoticeKind.FILED, NoticeKind.DECISION, NoticeKind.APPROVED, NoticeKind.ACTIVE,
        NoticeKind.REVOKED,
    ]
    assert actions(ctx, request_id) == [
        "requested", "approved", "activated", "revocation requested", "revoked"]


def test_private_material_is_never_stored(ctx: Context) -> None:
    request_id = file_edit(ctx)
    access.approve(ctx, request_id, BOB)
    with ctx.transaction() as uow:
        stored = repr(uow.requests.get(request_id)) + repr(list(uow.audit.events()))
    assert "SECRET" not in stored


def test_auto_approved_role_is_active_at_once(ctx: Context, granter: InMemoryGranter) -> None:
    request = access.file_request(ctx, ALICE, "staging", "view", duration=2 * H)
    assert request.state is State.ACTIVE and request.approved_by_policy
    assert granter.calls["granted"] == 1
    assert request.id is not None
    assert actions(ctx, request.id) == ["requested", "approved", "activated"]
    longer = access.file_request(ctx, BOB, "staging", "view", duration=3 * H)
    assert longer.state is State.PENDING


def test_quorum_of_two(ctx: Context, notifier: RecordingNotifier) -> None:
    request = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="debug")
    assert request.id is not None
    after_one = access.approve(ctx, request.id, BOB)
    assert after_one.state is State.PENDING
    assert notifier.notices[-1].approvals_missing == 1
    with pytest.raises(InvalidTransition, match="already decided"):
        access.approve(ctx, request.id, BOB)
    assert access.approve(ctx, request.id, CAROL).state is State.ACTIVE


def test_refused_decisions_change_nothing(ctx: Context) -> None:
    request_id = file_edit(ctx)
    with pytest.raises(NotAuthorized, match="your own request"):
        access.approve(ctx, request_id, ALICE)
    with pytest.raises(NotAuthorized, match="not an approver"):
        access.approve(ctx, request_id, CAROL)
    with pytest.raises(NotAuthorized, match="not an approver"):
        access.approve(ctx, request_id, ADMIN)
    with pytest.raises(NotFound, match="no request #999"):
        access.approve(ctx, 999, BOB)
    assert grants.get(ctx, request_id).state is State.PENDING
    assert grants.get(ctx, request_id).approvals == []
    assert actions(ctx, request_id) == ["requested"]


def test_user_group_member_approves(ctx: Context) -> None:
    request_id = file_edit(ctx)
    assert access.approve(ctx, request_id, DAVE).state is State.ACTIVE


def test_deny_and_cancel(ctx: Context, notifier: RecordingNotifier) -> None:
    first = file_edit(ctx)
    with pytest.raises(InvalidInput, match="Say why"):
        access.deny(ctx, first, BOB, "")
    denied = access.deny(ctx, first, BOB, "use view")
    assert (denied.state, denied.end_reason) == (State.DENIED, "use view")
    second = file_edit(ctx)
    with pytest.raises(NotAuthorized):
        access.cancel(ctx, second, BOB)
    assert access.cancel(ctx, second, ALICE).state is State.CANCELLED
    with pytest.raises(InvalidTransition, match="cancelled: it cannot be cancelled any more"):
        access.cancel(ctx, second, ALICE)
    assert NoticeKind.DENIED in notifier.kinds(first)
    assert NoticeKind.CANCELLED in notifier.kinds(second)


def test_break_glass(ctx: Context, notifier: RecordingNotifier) -> None:
    with pytest.raises(PolicyViolation, match="needs a reason"):
        access.file_request(ctx, ALICE, "prod", "admin", duration=H, reason="",
                            break_glass=True)
    request = access.file_request(ctx, ALICE, "prod", "admin", duration=H,
                                  reason="prod down", break_glass=True)
    assert request.state is State.ACTIVE and request.break_glass
    filed = notifier.notices[0]
    assert filed.kind is NoticeKind.FILED and filed.request.break_glass


def test_one_open_request_per_target(ctx: Context) -> None:
    file_edit(ctx)
    with pytest.raises(PolicyViolation, match="still waiting"):
        file_edit(ctx)


def test_unknown_cluster_role_namespace(ctx: Context) -> None:
    with pytest.raises(NotFound, match="Clusters: staging, prod"):
        access.file_request(ctx, ALICE, "qa", "edit", reason="x")
    with pytest.raises(NotFound, match="Roles: view, edit, deploy"):
        access.file_request(ctx, ALICE, "staging", "owner", reason="x")
    with pytest.raises(InvalidInput, match="choose one of shop, payments"):
        access.file_request(ctx, ALICE, "staging", "deploy", reason="x")
    ok = access.file_request(ctx, ALICE, "staging", "deploy", reason="x", namespace="shop")
    assert ok.namespace == "shop"


def test_temporary_failure_is_retried_with_backoff(ctx: Context, granter: InMemoryGranter,
                                                   notifier: RecordingNotifier,
                                                   clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    granter.fail_next = [temporary("GitLab answered 502"), temporary("GitLab answered 502")]
    approved = access.approve(ctx, request_id, BOB)
    assert approved.state is State.APPROVED
    assert approved.last_error == "GitLab answered 502"
    assert NoticeKind.RETRYING in notifier.kinds(request_id)

    assert operations.run_due(ctx) == 0  # not due before the backoff
    clock.advance(timedelta(seconds=31))
    assert operations.run_due(ctx) == 1  # second failure: backs off 60s
    assert grants.get(ctx, request_id).state is State.APPROVED
    clock.advance(timedelta(seconds=45))
    assert operations.run_due(ctx) == 0
    clock.advance(timedelta(seconds=20))
    assert operations.run_due(ctx) == 1
    done = grants.get(ctx, request_id)
    assert done.state is State.ACTIVE and done.last_error is None
    assert done.activated_at == clock.now  # the clock started at activation
    assert granter.calls["grant"] == 3 and granter.calls["granted"] == 1
    assert notifier.kinds(request_id).count(NoticeKind.RETRYING) == 1
    assert actions(ctx, request_id).count("grant attempt failed") == 2


def test_permanent_failure_fails_the_request(ctx: Context, granter: InMemoryGranter,
                                             notifier: RecordingNotifier) -> None:
    request_id = file_edit(ctx)
    granter.fail_next = [permanent("the bot may not bind edit")]
    failed = access.approve(ctx, request_id, BOB)
    assert failed.state is State.FAILED
    assert failed.end_reason == "the bot may not bind edit"
    assert NoticeKind.FAILED in notifier.kinds(request_id)
    with ctx.transaction() as uow:
        operation = uow.operations.get(request_id, OperationKind.GRANT)
    assert operation is not None and operation.state is OperationState.FAILED


def test_grant_gives_up_after_its_attempts(ctx: Context, granter: InMemoryGranter,
                                           clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    granter.fail_next = [temporary() for _ in range(ctx.retry.grant_attempts)]
    access.approve(ctx, request_id, BOB)
    for _ in range(ctx.retry.grant_attempts):
        clock.advance(2 * H)
        operations.run_due(ctx)
    failed = grants.get(ctx, request_id)
    assert failed.state is State.FAILED
    assert "gave up after 8 attempts" in (failed.end_reason or "")


def test_revocation_is_retried_until_confirmed(ctx: Context, granter: InMemoryGranter,
                                               clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    access.approve(ctx, request_id, BOB)
    granter.fail_next = [permanent("403"), temporary("timeout")]
    still = grants.revoke(ctx, request_id, BOB, "incident")
    assert still.state is State.ACTIVE
    with pytest.raises(InvalidTransition, match="already being revoked"):
        grants.revoke(ctx, request_id, ALICE, "again")
    clock.advance(2 * H)
    operations.run_due(ctx)
    assert grants.get(ctx, request_id).state is State.ACTIVE
    clock.advance(2 * H)
    operations.run_due(ctx)
    revoked = grants.get(ctx, request_id)
    assert (revoked.state, revoked.ended_by, revoked.end_reason) == (
        State.REVOKED, BOB, "incident")
    assert request_id not in granter.active


def test_revoke_authorization(ctx: Context) -> None:
    request_id = file_edit(ctx)
    access.approve(ctx, request_id, BOB)
    with pytest.raises(NotAuthorized, match="Only the grantee"):
        grants.revoke(ctx, request_id, CAROL, "no")
    assert grants.revoke(ctx, request_id, ADMIN, "audit").state is State.REVOKED


def test_expiry(ctx: Context, granter: InMemoryGranter, notifier: RecordingNotifier,
                clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    access.approve(ctx, request_id, BOB)
    clock.advance(2 * H - timedelta(seconds=1))
    assert grants.expire_due(ctx) == 0
    clock.advance(timedelta(seconds=1))
    assert grants.expire_due(ctx) == 1
    assert grants.expire_due(ctx) == 0
    expired = grants.get(ctx, request_id)
    assert (expired.state, expired.ended_at) == (State.EXPIRED, clock.now)
    assert request_id not in granter.active and granter.calls["revoked"] == 1
    assert notifier.kinds(request_id)[-1] is NoticeKind.EXPIRED


def test_self_extension_applies_at_once(ctx: Context, clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    access.approve(ctx, request_id, BOB)
    ends = grants.get(ctx, request_id).ends_at
    assert ends is not None
    extension = access.extend(ctx, request_id, ALICE, 2 * H, "longer rollout")
    assert extension.kind is Kind.EXTENSION and extension.state is State.ACTIVE
    assert grants.get(ctx, request_id).ends_at == ends + 2 * H
    clock.advance(3 * H)
    assert grants.expire_due(ctx) == 0
    clock.advance(H)
    assert grants.expire_due(ctx) == 1
    assert extension.id is not None
    assert grants.get(ctx, extension.id).state is State.EXPIRED


def test_extension_beyond_self_limit_needs_approval(ctx: Context) -> None:
    request = access.file_request(ctx, ALICE, "prod", "view", duration=3 * H, reason="x")
    assert request.id is not None
    access.approve(ctx, request.id, BOB)
    access.approve(ctx, request.id, CAROL)
    extension = access.extend(ctx, request.id, ALICE, 2 * H, "more")
    assert extension.state is State.PENDING and extension.id is not None
    with pytest.raises(PolicyViolation, match="already has extension"):
        access.extend(ctx, request.id, ALICE, H, "more")
    access.approve(ctx, extension.id, BOB)
    assert access.approve(ctx, extension.id, DAVE).state is State.ACTIVE
    grant = grants.get(ctx, request.id)
    assert grant.ends_at is not None and grant.activated_at is not None
    assert grant.ends_at - grant.activated_at == 5 * H


def test_a_grant_whose_access_is_ending_is_extended_no_more(
        ctx: Context, granter: InMemoryGranter, clock: FakeClock) -> None:
    """Its revocation owed (the backend failing, retried), or its time up before the sweep:
    an extension is refused and nothing is filed."""
    being_revoked = access.file_request(ctx, ALICE, "staging", "view", duration=H)
    expiring = access.file_request(ctx, CAROL, "staging", "view", duration=H)
    assert being_revoked.id is not None and expiring.id is not None
    granter.fail_next.append(temporary("cluster unreachable"))
    assert grants.revoke(ctx, being_revoked.id, ALICE, "done").state is State.ACTIVE
    with pytest.raises(InvalidTransition, match="already ending"):
        access.extend(ctx, being_revoked.id, ALICE, H, "more")
    clock.advance(H)
    with pytest.raises(InvalidTransition, match="already ending"):
        access.extend(ctx, expiring.id, CAROL, H, "more")
    assert grants.get(ctx, expiring.id).state is State.ACTIVE  # the sweep's, still
    with ctx.transaction() as uow:
        assert uow.requests.find(kind=Kind.EXTENSION, limit=None) == []


def test_pending_requests_time_out(ctx: Context, notifier: RecordingNotifier,
                                   clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    clock.advance(23 * H)
    assert access.time_out_pending(ctx) == 0
    clock.advance(H)
    assert access.time_out_pending(ctx) == 1
    assert grants.get(ctx, request_id).state is State.TIMED_OUT
    assert notifier.kinds(request_id)[-1] is NoticeKind.TIMED_OUT


def held_by(ctx: Context, request_id: int, worker: str) -> Operation:
    """The request's owed grant, its lease taken by ``worker``."""
    now = ctx.clock()
    with ctx.transaction() as uow:
        operation = uow.operations.get(request_id, OperationKind.GRANT)
        assert operation is not None and operation.id is not None
        assert uow.operations.claim(operation.id, worker, now, now + ctx.retry.lease)
    return operation


def test_worker_dying_after_the_backend_call(ctx: Context, granter: InMemoryGranter,
                                             clock: FakeClock) -> None:
    """The grant happened, the commit did not: the next pass finishes without granting twice."""
    request_id = file_edit(ctx)
    granter.fail_next = [temporary()]
    access.approve(ctx, request_id, BOB)
    clock.advance(H)
    held_by(ctx, request_id, "dead-worker")
    request = grants.get(ctx, request_id)
    granter.grant(operations.spec_for(request, clock.now + 2 * H), {})  # then the worker died
    assert operations.run_due(ctx) == 0  # the lease still holds
    clock.advance(ctx.retry.lease + timedelta(seconds=1))
    assert operations.run_due(ctx) == 1
    assert grants.get(ctx, request_id).state is State.ACTIVE
    assert granter.calls["granted"] == 1


def test_running_an_operation_returns_the_request_as_it_ends_up(
        ctx: Context, granter: InMemoryGranter, clock: FakeClock) -> None:
    """The engine hands back what it stored: the caller needs no second read; None when
    another worker holds the operation."""
    request_id = file_edit(ctx)
    granter.fail_next = [temporary()]
    access.approve(ctx, request_id, BOB)  # first attempt fails: owed again later
    clock.advance(H)
    owed = held_by(ctx, request_id, "another-worker")
    assert operations.run_operation(ctx, owed) is None
    clock.advance(ctx.retry.lease + timedelta(seconds=1))
    granter.fail_next = [temporary("still down")]
    retrying = operations.run_operation(ctx, owed)
    assert retrying is not None and retrying.state is State.APPROVED
    assert retrying.last_error == "still down"
    assert retrying == grants.get(ctx, request_id)
    clock.advance(H)
    active = operations.run_operation(ctx, owed)
    assert active is not None and active.state is State.ACTIVE
    assert active == grants.get(ctx, request_id)


def test_lists_by_scope(ctx: Context) -> None:
    mine = file_edit(ctx)
    other = access.file_request(ctx, CAROL, "staging", "edit", duration=H, reason="x")
    prod = access.file_request(ctx, ALICE, "prod", "view", duration=H, reason="x")
    ids = lambda user, scope: [r.id for r in access.list_requests(ctx, user, scope).requests]  # noqa: E731
    assert ids(ALICE, "mine") == [prod.id, mine]
    assert set(ids(BOB, "pending")) == {mine, other.id, prod.id}
    assert ids(CAROL, "pending") == [prod.id]  # approves prod; her own staging request is hers
    assert ids(ALICE, "pending") == []
    assert set(ids(ADMIN, "all")) == {mine, other.id, prod.id}
    access.approve(ctx, mine, BOB)
    assert ids(BOB, "active") == [mine]
    assert ids(ALICE, "active") == [mine]
    assert ids(CAROL, "active") == []
    with pytest.raises(InvalidInput, match="list mine"):
        access.list_requests(ctx, ALICE, "everything")


def test_audit_export(ctx: Context, clock: FakeClock) -> None:
    request_id = file_edit(ctx)
    clock.advance(H)
    access.approve(ctx, request_id, BOB)
    lines = [json.loads(line) for line in audit_service.export(ctx)]
    assert [line["action"] for line in lines] == ["requested", "approved", "activated"]
    assert lines[1]["actor"] == BOB and lines[1]["request_id"] == request_id
    since = "".join(audit_service.export(ctx, since="30m", fmt="csv"))
    rows = list(csv.DictReader(io.StringIO(since)))
    assert [row["action"] for row in rows] == ["approved", "activated"]
    assert json.loads(rows[1]["details"])["backend"] == {"binding": f"k8s-access-{request_id}"}
    with pytest.raises(NotAuthorized):
        list(audit_service.export(ctx, user_id=ALICE))
    with pytest.raises(InvalidInput, match="not a time"):
        list(audit_service.export(ctx, since="last week"))
