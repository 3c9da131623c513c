"""One pending request per grantee, cluster, role and namespace, kept by the database: people
filing the same at the same moment (or someone and another for them) store one request, and
the others hear that it is already pending; migration 0007 makes the index (and cancels the
duplicates a lost race left behind), and takes it away again."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.domain.errors import ConcurrentModification, DomainError
from bot.domain.model import AccessRequest, State
from bot.services import access
from bot.services.context import Context
from tests.conftest import ALICE, BOB, DAVE, create_database

FILERS = 16


def stored(ctx: Context) -> list[AccessRequest]:
    with ctx.transaction() as uow:
        return uow.requests.find(limit=None)


@pytest.mark.parametrize(("who", "namespace"), [
    ("the grantee, many times", None),
    ("the grantee and others for them", None),
    ("the grantee and others for them", "shop"),
])
def test_filing_the_same_at_the_same_moment_stores_one(ctx: Context, who: str,
                                                       namespace: str | None) -> None:
    role = "deploy" if namespace else "edit"
    filers = [ALICE] * FILERS if who.startswith("the grantee,") \
        else [ALICE, BOB, DAVE, "U0ADMIN05"] * (FILERS // 4)
    barrier = threading.Barrier(len(filers))

    def file(user: str) -> str:
        barrier.wait()
        try:
            access.file_request(ctx, user, "staging", role, duration=timedelta(hours=1),
                                reason="race", namespace=namespace,
                                grantee_id=None if user == ALICE else ALICE)
            return "filed"
        except DomainError as error:
            return error.message

    with ThreadPoolExecutor(max_workers=len(filers)) as pool:
        outcomes = Counter(pool.map(file, filers))

    assert outcomes["filed"] == 1, outcomes
    refusals = [message for message in outcomes if message != "filed"]
    assert all("request #1" in m and ("still waiting" in m or "(pending)" in m)
               for m in refusals), outcomes
    pending = stored(ctx)
    assert [(r.state, r.grantee) for r in pending] == [(State.PENDING, ALICE)]


def test_the_database_refuses_a_second_pending_request(ctx: Context) -> None:
    """Below the duplicate check: the store itself refuses it, as a race the use case retries."""
    first = access.file_request(ctx, ALICE, "staging", "edit", duration=timedelta(hours=1),
                                reason="one")
    twin = AccessRequest(**{**first.__dict__, "id": None, "version": 0, "approvals": [],
                            "requester_id": BOB, "grantee_id": ALICE})
    with pytest.raises(ConcurrentModification), ctx.transaction() as uow:
        uow.requests.add(twin)
    other_role = AccessRequest(**{**first.__dict__, "id": None, "version": 0, "approvals": [],
                                  "role": "view"})
    with ctx.transaction() as uow:
        uow.requests.add(other_role)  # another role: fine
    assert len(stored(ctx)) == 2


INSERT = text(
    "INSERT INTO access_requests (kind, requester_id, grantee_id, cluster, role, namespace, "
    "duration_seconds, reason, subject, state, break_glass, approved_by_policy, created_at, "
    "backend_ref, version, escalations_applied, renotified) VALUES ('access', :requester, "
    ":grantee, 'staging', 'edit', :namespace, 3600, 'x', 's', :state, false, false, :now, "
    "'{}', 1, 0, 0)")


def _insert(engine: Engine, requester: str, grantee: str | None = None,
            namespace: str | None = None, state: str = "pending") -> None:
    with engine.begin() as connection:
        connection.execute(INSERT, {"requester": requester, "grantee": grantee,
                                    "namespace": namespace, "state": state,
                                    "now": datetime(2026, 12, 1, tzinfo=UTC)})


def test_migration_0007_up_and_down(tmp_path: Path) -> None:
    url, drop = create_database(tmp_path)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, "0006")
        _insert(engine, ALICE)
        _insert(engine, BOB, grantee=ALICE)  # the same, for Alice: a race lost before 0007
        _insert(engine, ALICE, namespace="shop")
        _insert(engine, ALICE, state="denied")
        _insert(engine, ALICE, state="denied")
        migrate.upgrade(engine)
        migrate.check(engine)
        with engine.connect() as connection:
            states = connection.execute(text(
                "SELECT id, state FROM access_requests ORDER BY id")).all()
        assert [tuple(row) for row in states] == [
            (1, "pending"), (2, "cancelled"), (3, "pending"), (4, "denied"), (5, "denied")]
        with pytest.raises(Exception, match="uq_access_requests_one_pending"):
            _insert(engine, BOB, grantee=ALICE)
        _insert(engine, ALICE, state="approved")  # only pending ones are kept to one

        migrate.downgrade(engine, "0006")
        _insert(engine, BOB, grantee=ALICE)  # no index: the database lets it be
        migrate.upgrade(engine)  # and going up again cancels it
        with engine.connect() as connection:
            pending = connection.execute(text(
                "SELECT count(*) FROM access_requests WHERE state = 'pending'")).scalar()
        assert pending == 2
    finally:
        engine.dispose()
        drop()
