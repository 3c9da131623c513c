"""Concurrent clicks: many approvers at the same instant, or one click delivered many times,
give exactly one transition, one grant call and one activation on the shared database."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from bot.domain.errors import DomainError
from bot.domain.model import State
from bot.services import access, grants
from bot.services.context import Context
from tests.conftest import ALICE, APPROVER_GROUP, BOB
from tests.fakes.ports import InMemoryGranter, StaticDirectory

ATTEMPTS = 50


def race(ctx: Context, request_id: int, approvers: list[str]) -> Counter[str]:
    barrier = threading.Barrier(len(approvers))

    def click(user: str) -> str:
        barrier.wait()
        try:
            return access.approve(ctx, request_id, user).state.value
        except DomainError as error:
            return type(error).__name__

    with ThreadPoolExecutor(max_workers=len(approvers)) as pool:
        return Counter(pool.map(click, approvers))


def audit_actions(ctx: Context, request_id: int) -> Counter[str]:
    with ctx.transaction() as uow:
        return Counter(e.action for e in uow.audit.events() if e.request_id == request_id)


@pytest.mark.parametrize("who", ["fifty-approvers", "one-approver-fifty-clicks"])
def test_concurrent_approvals_grant_once(ctx: Context, granter: InMemoryGranter,
                                         directory: StaticDirectory, who: str) -> None:
    approvers = [f"U0RACE{n:04d}" for n in range(ATTEMPTS)]
    directory.groups[APPROVER_GROUP] = set(approvers)
    clicks = approvers if who == "fifty-approvers" else [BOB] * ATTEMPTS
    request = access.file_request(ctx, ALICE, "staging", "edit", duration=timedelta(hours=1),
                                  reason="race")
    assert request.id is not None

    outcomes = race(ctx, request.id, clicks)

    assert outcomes["active"] == 1, outcomes
    assert outcomes["InvalidTransition"] == ATTEMPTS - 1, outcomes
    assert granter.calls["grant"] == 1
    assert granter.calls["granted"] == 1
    final = grants.get(ctx, request.id)
    assert final.state is State.ACTIVE
    assert len(final.approvals) == 1
    counted = audit_actions(ctx, request.id)
    assert counted["approved"] == 1 and counted["activated"] == 1


def test_concurrent_quorum_of_two_counts_each_approver_once(ctx: Context,
                                                             granter: InMemoryGranter) -> None:
    raced_ctx = dataclasses.replace(ctx)
    request = access.file_request(raced_ctx, ALICE, "prod", "view",
                                  duration=timedelta(hours=1), reason="race")
    assert request.id is not None
    outcomes = race(raced_ctx, request.id, ["U0BOB0002", "U0CAROL03", "U0DAVE004"] * 10)
    assert outcomes["active"] == 1, outcomes
    assert granter.calls["granted"] == 1
    final = grants.get(ctx, request.id)
    assert len(final.approvals) == 2
    assert audit_actions(ctx, request.id)["activated"] == 1
