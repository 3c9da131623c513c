"""An approved extension racing the expiry of its grant: the grant is either extended (and not
revoked) or revoked with the extension refused in words, never revoked while its records say
active or extended, never both; on SQLite and PostgreSQL, with real threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.config import Config
from bot.domain.errors import DomainError, InvalidTransition
from bot.domain.model import OperationKind, OperationState, State
from bot.domain.ports import GrantResult, GrantSpec, NoticeKind
from bot.services import access, grants
from bot.services.context import Context
from tests.conftest import ALICE, BOB
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory
from tests.integration.test_expiry_batches import WatchedGranter, worker

H = timedelta(hours=1)


class SlowExtension(WatchedGranter):
    """Runs ``after_extend`` once the backend has extended, before the call returns: what
    happens elsewhere while the answer is on its way."""

    def __init__(self) -> None:
        super().__init__()
        self.after_extend: Callable[[], None] | None = None

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        result = super().extend(spec, reference)
        then, self.after_extend = self.after_extend, None
        if then is not None:
            then()
        return result


@pytest.fixture
def backend() -> SlowExtension:
    return SlowExtension()


@pytest.fixture
def two(engine: Engine, config: Config, backend: SlowExtension, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock) -> tuple[Context, Context]:
    return (worker(engine, config, backend, notifier, directory, clock, "sweeper"),
            worker(engine, config, backend, notifier, directory, clock, "approver"))


def grant_with_extension_waiting(ctx: Context) -> tuple[int, int]:
    """Alice's ``view`` on staging (approved by policy) ending in an hour, and her extension
    of it waiting for an approver."""
    grant = access.file_request(ctx, ALICE, "staging", "view", duration=H)
    assert grant.state is State.ACTIVE and grant.id is not None
    extension = access.extend(ctx, grant.id, ALICE, H, "longer")
    assert extension.state is State.PENDING and extension.id is not None
    return grant.id, extension.id


def assert_one_outcome(ctx: Context, backend: InMemoryGranter, grant_id: int,
                       extension_id: int) -> str:
    grant, extension = grants.get(ctx, grant_id), grants.get(ctx, extension_id)
    with ctx.transaction() as uow:
        revocation = uow.operations.get(grant_id, OperationKind.REVOKE)
    if grant.state is State.ACTIVE:  # extended, and not revoked
        assert extension.state is State.ACTIVE
        assert grant.ends_at == extension.ends_at
        assert revocation is None
        assert grant_id in backend.active
        return "extended"
    assert grant.state is State.EXPIRED  # revoked, and the extension refused
    assert extension.state in (State.PENDING, State.FAILED)
    assert revocation is not None and revocation.state is OperationState.DONE
    assert grant_id not in backend.active
    return "expired"


def test_an_extension_approved_while_the_grant_is_revoked_is_refused(
        two: tuple[Context, Context], backend: SlowExtension, clock: FakeClock,
        notifier: RecordingNotifier) -> None:
    sweeper, approver = two
    grant_id, extension_id = grant_with_extension_waiting(sweeper)
    clock.advance(H + timedelta(minutes=1))
    refused: list[DomainError] = []

    def approve_meanwhile() -> None:
        try:  # on a thread of its own: another replica's approval while this one revokes
            with ThreadPoolExecutor(1) as other:
                other.submit(access.approve, approver, extension_id, BOB).result()
        except DomainError as error:
            refused.append(error)

    backend.during[grant_id] = approve_meanwhile
    assert grants.expire_due(sweeper) == 1
    [error] = refused
    assert isinstance(error, InvalidTransition)
    assert "can no longer be extended; ask for new access" in error.message
    assert assert_one_outcome(sweeper, backend, grant_id, extension_id) == "expired"
    assert grants.get(sweeper, extension_id).state is State.PENDING  # nothing approved
    assert notifier.kinds(grant_id).count(NoticeKind.EXPIRED) == 1


def test_a_grant_expiring_while_its_extension_is_applied_refuses_the_extension(
        two: tuple[Context, Context], backend: SlowExtension, clock: FakeClock,
        notifier: RecordingNotifier) -> None:
    sweeper, approver = two
    grant_id, extension_id = grant_with_extension_waiting(sweeper)

    def expiry_meanwhile() -> None:
        clock.advance(H + timedelta(minutes=1))  # the grant's time is up mid-call
        with ThreadPoolExecutor(1) as other:
            assert other.submit(grants.expire_due, sweeper).result() == 1

    backend.after_extend = expiry_meanwhile
    clock.advance(H - timedelta(minutes=1))
    ended = access.approve(approver, extension_id, BOB)
    assert ended.state is State.FAILED
    assert "expired: the extension cannot apply" in (ended.end_reason or "")
    assert assert_one_outcome(sweeper, backend, grant_id, extension_id) == "expired"
    assert notifier.kinds(extension_id)[-1] is NoticeKind.FAILED
    assert notifier.kinds(grant_id).count(NoticeKind.EXPIRED) == 1


@pytest.mark.parametrize("round_", range(6))
def test_an_extension_and_the_expiry_started_together_end_one_way(
        two: tuple[Context, Context], backend: SlowExtension, clock: FakeClock,
        round_: int) -> None:
    sweeper, approver = two
    grant_id, extension_id = grant_with_extension_waiting(sweeper)
    clock.advance(H + timedelta(seconds=round_))
    start = threading.Barrier(2)

    def expire() -> None:
        start.wait()
        grants.expire_due(sweeper)

    def approve() -> None:
        start.wait()
        try:
            access.approve(approver, extension_id, BOB)
        except DomainError as error:
            assert "extended" in error.message or "extension" in error.message

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(expire), pool.submit(approve)]:
            done.result()
    assert assert_one_outcome(sweeper, backend, grant_id, extension_id) in ("extended",
                                                                             "expired")


def test_the_refused_extension_is_told_in_words(two: tuple[Context, Context],
                                               backend: SlowExtension, clock: FakeClock,
                                               notifier: RecordingNotifier) -> None:
    from bot.adapters.slack.blocks import requester_message

    sweeper, approver = two
    grant_id, extension_id = grant_with_extension_waiting(sweeper)
    backend.after_extend = lambda: (clock.advance(2 * H), grants.expire_due(sweeper))
    access.approve(approver, extension_id, BOB)
    [failed] = [n for n in notifier.notices
                if n.request.id == extension_id and n.kind is NoticeKind.FAILED]
    told = requester_message(failed)
    assert told is not None
    text = told[0]
    assert f"Extension #{extension_id} (staging/view) of grant #{grant_id} could not apply" \
        in text
    assert "is expired: the extension cannot apply" in text
    assert "platform team" not in text  # nothing broke: the grant's time was up


def test_a_grant_revoked_while_its_extension_is_applied_refuses_the_extension(
        two: tuple[Context, Context], backend: SlowExtension,
        notifier: RecordingNotifier) -> None:
    sweeper, approver = two
    grant_id, extension_id = grant_with_extension_waiting(sweeper)

    def revoked_meanwhile() -> None:
        with ThreadPoolExecutor(1) as other:
            other.submit(grants.revoke, sweeper, grant_id, BOB, "incident over").result()

    backend.after_extend = revoked_meanwhile
    ended = access.approve(approver, extension_id, BOB)
    assert ended.state is State.FAILED
    grant = grants.get(sweeper, grant_id)
    assert grant.state is State.REVOKED and grant_id not in backend.active
    assert notifier.kinds(extension_id)[-1] is NoticeKind.FAILED
    assert notifier.kinds(grant_id).count(NoticeKind.REVOKED) == 1
