"""The expiry sweep's batches (:mod:`bot.services.revocations`) on a real database: every grant
ended exactly once across workers sweeping together, a failing grant retried while the rest of
its batch completes, a lease lost mid-batch writing nothing, extensions ended with their grant,
and a pass draining batch after batch."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event

from bot.app import build_context
from bot.config import Config, RetryPolicy, Settings
from bot.domain.model import MessageRef, OperationKind, OperationState, State
from bot.domain.ports import GrantSpec, NoticeKind
from bot.services import access, grants, operations
from bot.services.context import APPROVAL_MESSAGES, Context
from tests.conftest import ALICE
from tests.fakes.ports import (
    FakeClock,
    InMemoryGranter,
    RecordingNotifier,
    StaticDirectory,
    temporary,
)

H = timedelta(hours=1)


class WatchedGranter(InMemoryGranter):
    """Counts revocations per request, and runs ``during`` inside the call for one request:
    what happens elsewhere while the backend works."""

    def __init__(self, pause: float = 0.0) -> None:
        super().__init__()
        self.revocations: Counter[int] = Counter()
        self.pause = pause
        self.during: dict[int, Callable[[], None]] = {}

    def revoke(self, spec: GrantSpec, reference: dict[str, Any]) -> None:
        with self.lock:
            self.revocations[spec.request_id] += 1
            then = self.during.pop(spec.request_id, None)
        if then is not None:
            then()
        time.sleep(self.pause)  # long enough for another worker's batch to overlap
        super().revoke(spec, reference)


def worker(engine: Engine, config: Config, granter: InMemoryGranter, notifier: RecordingNotifier,
           directory: StaticDirectory, clock: FakeClock, name: str) -> Context:
    ctx = build_context(Settings(), config, engine=engine,
                        granters={"staging": granter, "prod": granter}, notifier=notifier,
                        directory=directory, clock=clock)
    return dataclasses.replace(ctx, worker_id=name, retry=RetryPolicy(jitter=0))


def grants_ending_in_an_hour(ctx: Context, directory: StaticDirectory, count: int) -> list[int]:
    ids = []
    for n in range(count):
        user = f"U0END{n:04d}"
        directory.emails[user] = f"{user.lower()}@example.com"
        request = access.file_request(ctx, user, "staging", "view", duration=H)
        assert request.state is State.ACTIVE and request.id is not None
        ids.append(request.id)
    return ids


def audited(ctx: Context, action: str) -> Counter[int]:
    with ctx.transaction() as uow:
        return Counter(e.request_id or 0 for e in uow.audit.events() if e.action == action)


def test_two_workers_sweeping_together_end_each_grant_once(
        engine: Engine, config: Config, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock) -> None:
    granter = WatchedGranter(pause=0.002)
    one, two = (worker(engine, config, granter, notifier, directory, clock, name)
                for name in ("replica-1", "replica-2"))
    ids = grants_ending_in_an_hour(one, directory, 24)
    clock.advance(H)
    barrier = threading.Barrier(2)

    def sweep(ctx: Context) -> int:
        barrier.wait()
        return grants.expire_due(ctx, limit=5)

    with ThreadPoolExecutor(max_workers=2) as pool:
        owed = list(pool.map(sweep, (one, two)))

    assert sum(owed) == len(ids)  # each revocation owed by one worker
    assert granter.revocations == Counter(ids)  # and called once
    assert all(grants.get(one, i).state is State.EXPIRED for i in ids)
    assert audited(one, "expired") == Counter(ids)
    told = Counter(n.request.id for n in notifier.notices if n.kind is NoticeKind.EXPIRED)
    assert told == Counter(ids)


def test_a_failing_grant_is_retried_while_the_rest_of_its_batch_ends(
        ctx: Context, engine: Engine, config: Config, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock) -> None:
    granter = WatchedGranter()
    ctx = worker(engine, config, granter, notifier, directory, clock, "one")
    ids = grants_ending_in_an_hour(ctx, directory, 5)
    failing = ids[2]

    def refuse() -> None:
        raise temporary("the API server is restarting")

    granter.during[failing] = refuse
    clock.advance(H)
    assert grants.expire_due(ctx) == 5

    rest = [i for i in ids if i != failing]
    assert all(grants.get(ctx, i).state is State.EXPIRED for i in rest)
    still = grants.get(ctx, failing)
    assert still.state is State.ACTIVE and still.last_error == "the API server is restarting"
    with ctx.transaction() as uow:
        owed = uow.operations.get(failing, OperationKind.REVOKE)
    assert owed is not None and owed.state is OperationState.PENDING
    assert owed.attempts == 1 and owed.lease_owner is None and owed.next_attempt_at > clock.now
    assert audited(ctx, "revoke attempt failed") == Counter([failing])
    assert notifier.kinds(failing)[-1] is NoticeKind.RETRYING

    assert grants.expire_due(ctx) == 0  # owed already: the retry pass takes it
    clock.advance(ctx.retry.delay(1))
    assert operations.run_due(ctx) == 1
    assert grants.get(ctx, failing).state is State.EXPIRED
    assert granter.revocations == Counter({**Counter(ids), failing: 2})
    assert audited(ctx, "expired") == Counter(ids)
    assert notifier.kinds(failing).count(NoticeKind.EXPIRED) == 1


def test_a_lease_lost_mid_batch_writes_nothing_for_its_grant(
        engine: Engine, config: Config, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock) -> None:
    granter = WatchedGranter()
    one = worker(engine, config, granter, notifier, directory, clock, "slow")
    two = worker(engine, config, granter, notifier, directory, clock, "taker")
    ids = grants_ending_in_an_hour(one, directory, 4)
    stalled = ids[1]

    def taken_over() -> None:
        """The first worker stalls past its lease, and another worker claims the revocation
        (it has not finished it yet)."""
        clock.advance(one.retry.lease + timedelta(seconds=1))
        with two.transaction() as uow:
            owed = uow.operations.get(stalled, OperationKind.REVOKE)
            assert owed is not None and owed.id is not None
            assert uow.operations.claim(owed.id, "taker/1", clock.now,
                                        clock.now + two.retry.lease)

    granter.during[stalled] = taken_over
    clock.advance(H)
    assert grants.expire_due(one) == 4

    rest = [i for i in ids if i != stalled]
    assert all(grants.get(one, i).state is State.EXPIRED for i in rest)
    assert grants.get(one, stalled).state is State.ACTIVE  # nothing written for it
    assert audited(one, "expired") == Counter(rest)
    assert notifier.kinds(stalled).count(NoticeKind.EXPIRED) == 0
    with one.transaction() as uow:
        held = uow.operations.get(stalled, OperationKind.REVOKE)
    assert held is not None and held.state is OperationState.PENDING
    assert held.lease_owner == "taker/1"

    clock.advance(two.retry.lease + timedelta(seconds=1))  # the taker died: its lease lapses
    assert operations.run_due(two) == 1
    assert grants.get(one, stalled).state is State.EXPIRED
    assert audited(one, "expired") == Counter(ids)
    assert notifier.kinds(stalled).count(NoticeKind.EXPIRED) == 1


def test_an_extension_ends_with_its_grant_in_a_batch(
        ctx: Context, granter: InMemoryGranter, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock) -> None:
    others = grants_ending_in_an_hour(ctx, directory, 3)
    grant = access.file_request(ctx, ALICE, "staging", "edit", duration=H, reason="rollout")
    assert grant.id is not None
    access.approve(ctx, grant.id, "U0BOB0002")
    extension = access.extend(ctx, grant.id, ALICE, H, "longer rollout")
    assert extension.state is State.ACTIVE and extension.id is not None
    with ctx.transaction() as uow:
        uow.messages.add(grant.id, APPROVAL_MESSAGES, MessageRef("C0APPROVE", "1.2"))
    clock.advance(2 * H)

    assert grants.expire_due(ctx) == 4
    ended, its_extension = grants.get(ctx, grant.id), grants.get(ctx, extension.id)
    assert (ended.state, its_extension.state) == (State.EXPIRED, State.EXPIRED)
    assert its_extension.ended_at == ended.ended_at == clock.now
    assert all(grants.get(ctx, i).state is State.EXPIRED for i in others)
    assert audited(ctx, "expired") == Counter([*others, grant.id])
    notice = [n for n in notifier.notices if n.request.id == grant.id][-1]
    assert notice.kind is NoticeKind.EXPIRED
    assert notice.messages == (MessageRef("C0APPROVE", "1.2"),)  # read with the batch


def test_a_pass_drains_batch_after_batch(ctx: Context, granter: InMemoryGranter,
                                         directory: StaticDirectory, clock: FakeClock) -> None:
    ids = grants_ending_in_an_hour(ctx, directory, 7)
    clock.advance(H)
    assert grants.expire_due(ctx, limit=2) == 7
    assert all(grants.get(ctx, i).state is State.EXPIRED for i in ids)
    assert granter.calls["revoked"] == 7
    assert grants.expire_due(ctx, limit=2) == 0


def test_a_pass_failing_mid_way_still_tells_the_grants_it_ended_and_the_rest_later(
        engine: Engine, config: Config, notifier: RecordingNotifier,
        directory: StaticDirectory, clock: FakeClock, monkeypatch: Any) -> None:
    """The database goes away as the third batch completes (its backend calls were made):
    the two batches before it are told at once, the third is finished by the retry pass once
    its leases lapse and told then; nobody is told twice."""
    from bot.domain.errors import DatabaseUnavailable
    from bot.services import revocations

    granter = WatchedGranter()
    ctx = worker(engine, config, granter, notifier, directory, clock, "one")
    ids = grants_ending_in_an_hour(ctx, directory, 6)
    complete, batches = revocations._complete, Counter[str]()

    def database_gone_at_the_third(*args: Any) -> Any:
        batches["completed"] += 1
        if batches["completed"] == 3:
            raise DatabaseUnavailable("connection refused")
        return complete(*args)

    monkeypatch.setattr(revocations, "_complete", database_gone_at_the_third)
    clock.advance(H)
    try:
        grants.expire_due(ctx, limit=2)
    except DatabaseUnavailable:
        pass
    else:
        raise AssertionError("the pass should have failed")

    def told() -> Counter[int]:
        return Counter(n.request.id or 0 for n in notifier.notices
                       if n.kind is NoticeKind.EXPIRED)

    ended = [i for i in ids if grants.get(ctx, i).state is State.EXPIRED]
    assert len(ended) == 4
    assert told() == Counter(ended)  # told although the pass failed after them
    clock.advance(ctx.retry.lease + timedelta(seconds=1))
    assert operations.run_due(ctx) == 2
    assert all(grants.get(ctx, i).state is State.EXPIRED for i in ids)
    assert told() == Counter(ids)  # each once
    assert audited(ctx, "expired") == Counter(ids)


def test_a_batch_saves_its_ended_grants_in_one_update(
        ctx: Context, engine: Engine, directory: StaticDirectory, clock: FakeClock) -> None:
    """The rows the batch holds locked are saved by one UPDATE sent for all of them, each
    version compared and bumped, not by a flush of each row."""
    ids = grants_ending_in_an_hour(ctx, directory, 6)
    versions = {i: grants.get(ctx, i).version for i in ids}
    clock.advance(H)
    updates: list[tuple[str, int]] = []

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE ACCESS_REQUESTS"):
            updates.append((statement, len(parameters) if executemany else 1))

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert grants.expire_due(ctx) == 6
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [rows for _, rows in updates] == [6]
    assert "version" in updates[0][0].split("WHERE")[1]  # compared
    for request_id in ids:
        ended = grants.get(ctx, request_id)
        assert ended.state is State.EXPIRED and ended.version == versions[request_id] + 1


def test_a_locked_row_saved_from_a_stale_copy_is_refused(ctx: Context,
                                                         directory: StaticDirectory) -> None:
    from bot.domain.errors import ConcurrentModification

    ids = grants_ending_in_an_hour(ctx, directory, 2)
    with ctx.transaction() as uow:
        held = uow.requests.get_many(ids, for_update=True)
        held[1].version -= 1  # as read before someone else's change
        for request in held:
            request.last_error = "noted"
        try:
            uow.requests.save_many(held)
        except ConcurrentModification:
            pass
        else:
            raise AssertionError("a stale copy was saved")
