"""Revocations many at a time: the expiry sweep's path beside the one-at-a-time engine of
:mod:`bot.services.operations`, for the minute in which thousands of grants end together.

A batch keeps every guarantee of the engine in three steps:

1. One transaction finds up to N grants past their end, owes their revocations and takes the
   leases on them (:func:`claim_expired`). Replicas take different grants: the rows another
   replica is claiming are passed over (``SKIP LOCKED`` on PostgreSQL; SQLite has one writer
   at a time), and a revocation owed already is never owed twice (one per request and kind).
2. The backend calls run outside any transaction, a few at a time while they wait
   (``Concurrency.backend_calls``, :func:`bot.services.fanout.fan_out`), while one heartbeat
   renews every lease of the batch (:func:`run_batch`).
3. One transaction completes every revocation the backend confirmed and this worker still
   holds: the grants and their extensions ended, an audit event each, the operations done and
   the notices prepared, approval messages read together. A lease taken over meanwhile writes
   nothing for its grant; a call that failed goes to the engine's retry path
   (:func:`bot.services.operations.settle_failure`) on its own and holds up none of the rest.

A worker that dies mid-batch leaves its leases to lapse; the retry pass finishes the work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.domain.errors import DomainError
from bot.domain.model import (
    POLICY_ACTOR,
    AccessRequest,
    Operation,
    OperationKind,
    State,
)
from bot.domain.ports import Notice
from bot.logcontext import request_scope
from bot.services.context import Context, retrying
from bot.services.fanout import fan_out
from bot.services.operations import (
    LeaseKeeper,
    LeaseLost,
    _lease_owner,
    end_grant,
    observe_expiry_lag,
    revoke_in_backend,
    settle_failure,
)

log = logging.getLogger(__name__)

EXPIRY = {"event": "expire", "by": POLICY_ACTOR, "reason": "time is up"}
"""Why an expiry's revocation is owed (:attr:`Operation.intent`)."""


@dataclass(frozen=True)
class Claimed:
    """A revocation this worker owes and holds the lease on, with its grant as claimed."""

    operation: Operation
    request: AccessRequest


@dataclass(frozen=True)
class Batch:
    owner: str
    """The lease owner of every claimed operation: this batch, and no other claim."""
    claimed: list[Claimed]
    found: int
    """Grants found due, those another replica owed meanwhile included."""


def claim_expired(ctx: Context, limit: int) -> Batch:
    """One transaction: owe the revocations of up to ``limit`` grants past their end, soonest
    end first, each leased to this batch (``RetryPolicy.lease``)."""
    now = ctx.clock()
    owner = _lease_owner(ctx)
    with ctx.transaction() as uow:
        due = {request.id: request
               for request in uow.requests.due_to_expire(now, limit, skip_locked=True)}
        owed = uow.operations.enqueue_many([
            Operation(request_id=request_id, kind=OperationKind.REVOKE, next_attempt_at=now,
                      intent=dict(EXPIRY), attempts=1, lease_owner=owner,
                      lease_until=now + ctx.retry.lease)
            for request_id in due if request_id is not None])
    return Batch(owner, [Claimed(operation, due[operation.request_id]) for operation in owed],
                 len(due))


def run_batch(ctx: Context, batch: Batch) -> list[Notice]:
    """Revoke the batch's grants in their backends and complete them (see the module); the
    notices for the grantees, to send after this returns."""
    if not batch.claimed:
        return []
    with _Renewal(ctx, batch) as renewal:
        calls = fan_out(lambda claimed: _call(ctx, claimed, renewal.holds), batch.claimed,
                        ctx.tuning.concurrency.backend_calls, "revocations")
    confirmed = [call.claimed for call in calls if call.error is None]
    notices, refused, lost = retrying(lambda: _complete(ctx, batch.owner, confirmed))
    failed = [(call.claimed, call.error) for call in calls if call.error is not None]
    outcomes = {claimed.operation.id: "ok" for claimed in confirmed}
    for claimed in lost:
        outcomes[claimed.operation.id] = "lost"
        log.warning("another worker took over request %s's revocation; leaving it to them",
                    claimed.request.id)
    for claimed, error in [*failed, *refused]:
        outcomes[claimed.operation.id] = _settle(ctx, claimed, error)
    for call in calls:
        ctx.metrics.backend_call(OperationKind.REVOKE.value, call.claimed.request.cluster,
                                 call.seconds, outcomes[call.claimed.operation.id])
    observe_expiry_lag(ctx, notices)
    return notices


@dataclass(frozen=True)
class _Called:
    claimed: Claimed
    error: Exception | None
    seconds: float


def _call(ctx: Context, claimed: Claimed, holds: Callable[[int], bool]) -> _Called:
    """One backend call; what it raised, if anything. A lease already taken over is not
    called on: the worker that took it makes the call."""
    started = time.monotonic()
    with request_scope(claimed.request.id):
        if not holds(claimed.operation.id or 0):
            return _Called(claimed, LeaseLost(claimed.operation.lease_owner), 0.0)
        try:
            revoke_in_backend(ctx, claimed.request, ctx.clock())
        except Exception as error:
            return _Called(claimed, error, time.monotonic() - started)
    return _Called(claimed, None, time.monotonic() - started)


def _complete(ctx: Context, owner: str, confirmed: list[Claimed]) -> tuple[
        list[Notice], list[tuple[Claimed, Exception]], list[Claimed]]:
    """One transaction for every confirmed revocation still held by ``owner``: the notices,
    those the lifecycle refused (nothing written for them), and those whose lease was lost."""
    now = ctx.clock()
    with ctx.transaction() as uow:
        held = uow.operations.renew_many([c.operation.id or 0 for c in confirmed], owner,
                                         now + ctx.retry.lease)
        mine = [c for c in confirmed if c.operation.id in held]
        grants = {r.id or 0: r for r in uow.requests.get_many([c.request.id or 0 for c in mine],
                                                          for_update=True)}
        extensions: dict[int | None, list[AccessRequest]] = {}
        for extension in uow.requests.extensions_of(list(grants), [State.ACTIVE]):
            extensions.setdefault(extension.parent_id, []).append(extension)
        notices: list[Notice] = []
        ended: list[AccessRequest] = []
        refused: list[tuple[Claimed, Exception]] = []
        for claimed in mine:
            grant = grants[claimed.request.id or 0]
            try:
                notices.append(end_grant(uow.audit, claimed.operation, grant,
                                         extensions.get(grant.id, []), now))
            except DomainError as error:
                refused.append((claimed, error))
                continue
            ended += [grant, *extensions.get(grant.id, [])]
        uow.requests.save_many(ended)
        refusals = {claimed.operation.id for claimed, _ in refused}
        uow.operations.finish_many([c.operation.id or 0 for c in mine
                                    if c.operation.id not in refusals], owner)
        notices = ctx.prepared_all(uow, notices)
    return notices, refused, [c for c in confirmed if c.operation.id not in held]


def _settle(ctx: Context, claimed: Claimed, error: Exception) -> str:
    """A failed call, retried later through the engine; its outcome for the metrics."""
    with request_scope(claimed.request.id):
        try:
            outcome, _ = settle_failure(ctx, claimed.operation, error)
        except LeaseLost:
            log.warning("another worker took over request %s's revocation; leaving it to them",
                        claimed.request.id)
            return "lost"
        except Exception:  # the database hiccupped: the lease lapses, the retry pass runs it
            log.exception("recording the failed revocation of request %s failed",
                          claimed.request.id)
            return "unexpected"
    return outcome


class _Renewal(LeaseKeeper):
    """Keeps the leases of a batch, and remembers which were taken over, so that their calls
    are left to the taker."""

    def __init__(self, ctx: Context, batch: Batch) -> None:
        super().__init__(ctx, "renew-batch", "the leases of a batch of revocations")
        self._owner = batch.owner
        self._held = frozenset(c.operation.id or 0 for c in batch.claimed)

    def holds(self, operation_id: int) -> bool:
        return operation_id in self._held

    def renew(self) -> bool:
        if not self._held:
            return False
        with self._ctx.transaction() as uow:
            kept = uow.operations.renew_many(self._held, self._owner,
                                             self._ctx.clock() + self._ctx.retry.lease)
        if len(kept) < len(self._held):
            log.warning("%d revocation lease(s) of this batch were taken over",
                        len(self._held) - len(kept))
        self._held = frozenset(kept)
        return bool(self._held)

