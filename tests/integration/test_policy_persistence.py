"""What the richer policy keeps on a request survives the database: the grantee asked for, the
window, approvals for less, escalation steps applied and reminders sent; and migration 0004
goes up and down over existing rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import inspect, text

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.domain import escalation, lifecycle
from bot.domain.model import Actor, State
from bot.services.context import Context
from tests.conftest import ALICE, BOB, CAROL, create_database

H = timedelta(hours=1)


def test_the_new_fields_round_trip(ctx: Context) -> None:
    now = ctx.clock()
    policy = ctx.config.policy("prod", "view")  # two approvals required
    request = lifecycle.file_request(policy=policy, requester=Actor(BOB), grantee=Actor(ALICE),
                                     subject="alice@example.com", duration=3 * H, reason="x",
                                     now=now, window_start=now + 2 * H)
    request.escalations_applied, request.renotified = 1, 2
    with ctx.transaction() as uow:
        request = uow.requests.add(request)
    assert request.id is not None
    with ctx.transaction() as uow:
        stored = uow.requests.get(request.id, for_update=True)
        lifecycle.approve(stored, Actor(CAROL), policy, now, "half", duration=H + H // 2)
        uow.requests.save(stored)
    with ctx.transaction() as uow:
        stored = uow.requests.get(request.id)
    assert (stored.requester_id, stored.grantee_id, stored.grantee) == (BOB, ALICE, ALICE)
    assert stored.window_start == now + 2 * H
    assert (stored.escalations_applied, stored.renotified) == (1, 2)
    assert stored.duration == 3 * H and stored.granted_duration == H + H // 2
    assert stored.window_end == now + 3 * H + H // 2
    assert [a.duration for a in stored.approvals] == [H + H // 2]
    assert stored.state is State.PENDING
    assert escalation.approvers_of(stored, policy) >= policy.approvers


def test_a_request_for_oneself_stores_no_grantee(ctx: Context) -> None:
    policy = ctx.config.policy("staging", "edit")
    request = lifecycle.file_request(policy=policy, requester=Actor(ALICE), subject="a",
                                     duration=H, reason="x", now=ctx.clock())
    with ctx.transaction() as uow:
        request_id = uow.requests.add(request).id
    assert request_id is not None
    with ctx.transaction() as uow:
        stored = uow.requests.get(request_id)
    assert stored.grantee_id is None and stored.grantee == ALICE and stored.window_start is None
    assert (stored.escalations_applied, stored.renotified) == (0, 0)


def test_0004_up_and_down_over_existing_rows(tmp_path: Path) -> None:
    url, drop = create_database(tmp_path)
    engine = make_engine(url)
    created = datetime(2026, 11, 30, 9, tzinfo=UTC).replace(tzinfo=None)
    try:
        migrate.upgrade(engine, "0003")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO access_requests (id, kind, requester_id, cluster, role, "
                "duration_seconds, reason, subject, state, break_glass, approved_by_policy, "
                "created_at, backend_ref, version) VALUES (1, 'access', :who, 'prod', 'view', "
                "3600, 'x', 's', 'pending', false, false, :at, '{}', 0)"),
                {"who": ALICE, "at": created})
            connection.execute(text(
                "INSERT INTO approvals (id, request_id, approver_id, decision, comment, "
                "decided_at) VALUES (1, 1, :who, 'approve', '', :at)"),
                {"who": BOB, "at": created})
        migrate.upgrade(engine, "head")
        migrate.check(engine)
        with engine.connect() as connection:
            row = connection.execute(text(
                "SELECT grantee_id, window_start, escalations_applied, renotified "
                "FROM access_requests")).one()
            approved = connection.execute(text("SELECT approved_seconds FROM approvals")).one()
        assert tuple(row) == (None, None, 0, 0) and tuple(approved) == (None,)
        indexes = {i["name"] for i in inspect(engine).get_indexes("access_requests")}
        assert "ix_access_requests_grantee_created" in indexes

        migrate.downgrade(engine, "0003")
        columns = {c["name"] for c in inspect(engine).get_columns("access_requests")}
        assert not {"grantee_id", "window_start", "escalations_applied", "renotified"} & columns
        assert "approved_seconds" not in {c["name"] for c in inspect(engine).get_columns(
            "approvals")}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM access_requests")).scalar() == 1
        migrate.upgrade(engine)
        migrate.check(engine)
    finally:
        engine.dispose()
        drop()
