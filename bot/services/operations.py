"""Backend work: grant, extend and revoke, each owed in the database before it is attempted.

An approval, a revocation or an expiry records an :class:`Operation`; :func:`run_operation`
takes its lease, calls the backend outside any transaction, and completes the request in one
transaction afterwards. An approval owes its grant and takes the lease in the transaction that
decides it (:func:`owe_held`), and :func:`run_held` runs it from there: one transaction to
decide, one to complete (and one to record what the backend held before, when it held
anything). The lease is short (``RetryPolicy.lease``) and a heartbeat renews it
while the call runs, so a slow backend is not taken over while its worker lives, and a worker
that dies mid-call leaves the operation owed with a lease that lapses within about a minute: the
next pass (``jobs run retry``) finishes it; the backends are idempotent, so the repeated call
grants nothing twice. Every write after the call is fenced by the lease: a worker whose lease
was taken over writes nothing. Failures that may pass are retried with backoff; grants give up
after a limit, revocations never do.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from bot.domain import lifecycle, windows
from bot.domain.errors import (
    DomainError,
    InvalidTransition,
    PermanentBackendError,
    TemporaryBackendError,
)
from bot.domain.model import (
    POLICY_ACTOR,
    AccessRequest,
    Kind,
    Operation,
    OperationKind,
    OperationState,
    State,
)
from bot.domain.ports import (
    AuditTrail,
    GrantResult,
    GrantSpec,
    Notice,
    NoticeKind,
    OperationQueue,
    SharedObjects,
    UnitOfWork,
)
from bot.logcontext import request_scope
from bot.services import scheduled
from bot.services.context import Context, audit, retrying

log = logging.getLogger(__name__)


def spec_for(request: AccessRequest, ends_at: datetime) -> GrantSpec:
    assert request.id is not None
    return GrantSpec(
        request_id=request.id,
        requester_id=request.requester_id,
        cluster=request.cluster,
        role=request.role,
        namespace=request.namespace,
        subject=request.subject,
        ends_at=ends_at,
        user_csr=request.user_csr,
    )


def owe(operations: OperationQueue, request: AccessRequest, kind: OperationKind, now: datetime,
        **intent: str) -> Operation | None:
    """Record that the backend owes ``kind`` for ``request``; None when it is owed already."""
    assert request.id is not None
    operation = Operation(request_id=request.id, kind=kind, next_attempt_at=now, intent=intent)
    return operation if operations.enqueue(operation) else None


def owe_approved(operations: OperationQueue, request: AccessRequest,
                 now: datetime) -> Operation | None:
    """The backend work an approved request needs: a grant, or an extension of its parent;
    due now, or at the start of a scheduled window still ahead."""
    return owe(operations, request, _approved_kind(request),
               max(now, windows.activation_at(request) or now))


def forgo(operations: OperationQueue, request: AccessRequest, kind: OperationKind,
          why: str) -> None:
    """The owed ``kind`` of ``request`` is wanted no more (a window cancelled before its
    start): it never runs. Nothing happens when none is owed."""
    assert request.id is not None
    owed = operations.get(request.id, kind)
    if owed is not None and owed.state is OperationState.PENDING:
        _finish(operations, owed, OperationState.FAILED, why)


def _approved_kind(request: AccessRequest) -> OperationKind:
    return OperationKind.EXTEND if request.kind is Kind.EXTENSION else OperationKind.GRANT


@dataclass(frozen=True)
class Held:
    """An operation this worker holds the lease on, with the request (and an extension's
    grant) as read in the transaction that took the lease."""

    operation: Operation
    request: AccessRequest
    parent: AccessRequest | None


def owe_held(ctx: Context, uow: UnitOfWork, request: AccessRequest,
             now: datetime) -> Held | None:
    """Owe the backend work ``request`` (just approved in ``uow``) needs, and take its lease in
    the same transaction: the caller runs it with :func:`run_held` after the commit, without
    claiming it again. None when it is owed already. A worker that dies before running it
    leaves the lease to lapse (``RetryPolicy.lease``), and the retry pass runs it."""
    assert request.id is not None
    operation = Operation(request_id=request.id, kind=_approved_kind(request),
                          next_attempt_at=now, attempts=1, lease_owner=_lease_owner(ctx),
                          lease_until=now + ctx.retry.lease)
    if not uow.operations.enqueue(operation):
        return None
    parent = uow.requests.get(request.parent_id) if request.parent_id is not None else None
    return Held(operation, request, parent)


def run_due(ctx: Context, limit: int | None = None) -> int:
    """One retry pass: every owed operation whose time has come, up to ``limit`` (the tuning's
    batch); returns how many were run."""
    with ctx.transaction() as uow:
        due = uow.operations.due(ctx.clock(),
                                 ctx.tuning.batches.operations if limit is None else limit)
    return run_all(ctx, due)


def next_due(ctx: Context) -> datetime | None:
    """When :func:`run_due` next has work (UTC; past when it has some already): a grant owed
    at its window's start, a retry after its back-off; ``None`` when nothing is owed."""
    with ctx.transaction() as uow:
        return uow.operations.next_due(ctx.clock())


def run_all(ctx: Context, operations: list[Operation]) -> int:
    """Run owed operations a few at a time (backends answer slowly, not one after another);
    returns how many were run here, not held by another worker."""

    def ran(operation: Operation) -> bool:
        return run_operation(ctx, operation) is not None

    if len(operations) <= 1:
        return sum(map(ran, operations))
    with ThreadPoolExecutor(max_workers=ctx.tuning.concurrency.backend_calls,
                            thread_name_prefix="operations") as pool:
        return sum(pool.map(ran, operations))


# --- running an operation -----------------------------------------------------------------


class LeaseLost(Exception):
    """Another worker claimed the operation after this worker's lease lapsed: stop writing."""


def _backend_name(ctx: Context, cluster: str) -> str:
    """What the requester is waiting for, in words: GitLab, or the cluster's API server."""
    configured = ctx.config.clusters.get(cluster)
    if configured is not None and configured.backend == "gitlab":
        return "GitLab"
    return f"the Kubernetes API of cluster {cluster}"


def _lease_owner(ctx: Context) -> str:
    """A name for one claim: the worker and a token, so that two claims by the same process
    (a thread pool, or a claim after its own lease lapsed) fence each other too."""
    return f"{ctx.worker_id[:54]}/{uuid.uuid4().hex[:9]}"


def _hold(ctx: Context, operations: OperationQueue, operation: Operation) -> datetime:
    """Renew this worker's lease inside the transaction of ``operations``, or raise
    :class:`LeaseLost`. Returns the lease's new end."""
    assert operation.id is not None and operation.lease_owner is not None
    until = ctx.clock() + ctx.retry.lease
    if not operations.renew(operation.id, operation.lease_owner, until):
        raise LeaseLost(operation.lease_owner)
    return until


class LeaseKeeper:
    """Renews leases every ``RetryPolicy.heartbeat`` on a thread of its own while a backend
    call runs, so that a call that blocks does not stop it; a worker that dies takes it along,
    and its leases lapse. :meth:`renew` says whether any lease is left to keep; a renewal the
    database refused is logged and tried again at the next beat."""

    def __init__(self, ctx: Context, name: str, leases: str) -> None:
        self._ctx = ctx
        self._leases = leases
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def renew(self) -> bool:
        """Renew the leases once; False when none is left to keep."""
        raise NotImplementedError

    def _run(self) -> None:
        interval = self._ctx.retry.heartbeat.total_seconds()
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:  # the database hiccupped: the leases still run, try again
                log.exception("renewing %s failed", self._leases)


class Heartbeat(LeaseKeeper):
    """Keeps an operation's lease while its backend call runs, and tells the approvers and the
    requester, once, when a grant is slow."""

    def __init__(self, ctx: Context, operation: Operation, request: AccessRequest,
                 started: datetime) -> None:
        super().__init__(ctx, f"heartbeat-{operation.id}", f"the lease of request {request.id}")
        self._operation = operation
        self._request = request
        self._started = started
        self._told_slow = operation.kind is OperationKind.REVOKE

    def renew(self) -> bool:
        try:
            self.beat()
        except LeaseLost:
            log.warning("the lease on request %s's %s was taken over; this worker will "
                        "write nothing", self._request.id, self._operation.kind.value)
            return False
        return True

    def beat(self) -> None:
        """Renew the lease once; announce the delay when the call has become slow."""
        slow = self._ctx.clock() - self._started
        tell = not self._told_slow and slow >= self._ctx.retry.slow_after
        backend = _backend_name(self._ctx, self._request.cluster) if tell else ""
        with self._ctx.transaction() as uow:
            _hold(self._ctx, uow.operations, self._operation)
            notice = self._ctx.prepared(uow, Notice(
                NoticeKind.SLOW, self._request, detail=f"{backend} is slow")) if tell else None
        if notice is not None:
            self._told_slow = True
            log.warning("%s for request %s still running after %ss: %s is slow",
                        self._operation.kind.value, self._request.id,
                        int(slow.total_seconds()), backend)
            self._ctx.notify(notice)


def run_operation(ctx: Context, operation: Operation) -> AccessRequest | None:
    """Do the owed backend call if nobody else holds it, and return the request as it ends up
    (active, extended, ended, failed, or waiting for a retry); None when another worker holds
    the call."""
    assert operation.id is not None
    now = ctx.clock()
    owner = _lease_owner(ctx)
    with ctx.transaction() as uow:
        if not uow.operations.claim(operation.id, owner, now, now + ctx.retry.lease):
            return None
        claimed = uow.operations.get(operation.request_id, operation.kind)
        assert claimed is not None
        request = uow.requests.get(claimed.request_id)
        parent = uow.requests.get(request.parent_id) if request.parent_id is not None else None
    return run_held(ctx, Held(claimed, request, parent))


def run_held(ctx: Context, held: Held) -> AccessRequest:
    """Do the backend call of an operation this worker holds (:func:`run_operation`,
    :func:`owe_held`) and return the request as it ends up."""
    claimed, request, parent = held.operation, held.request, held.parent
    with request_scope(request.id):
        started = ctx.clock()
        timer = time.monotonic()
        outcome = "ok"
        try:
            try:
                with Heartbeat(ctx, claimed, request, started):
                    result = _call_backend(ctx, claimed, request, parent, started)
            except LeaseLost:
                raise
            except Exception as error:
                outcome, ended = settle_failure(ctx, claimed, error)
                return ended
            try:
                return _complete(ctx, claimed, result, started)
            except DomainError as error:
                if claimed.kind is not OperationKind.EXTEND:
                    raise
                # the grant began to end while its backend was extended: the end stands
                outcome, ended = settle_failure(ctx, claimed, error)
                return ended
        except LeaseLost:
            outcome = "lost"
            log.warning("another worker took over request %s's %s; leaving it to them",
                        request.id, claimed.kind.value)
            with ctx.transaction() as uow:  # as far as the other worker has got
                return uow.requests.get(claimed.request_id)
        finally:
            ctx.metrics.backend_call(claimed.kind.value, request.cluster,
                                     time.monotonic() - timer, outcome)


def settle_failure(ctx: Context, operation: Operation,
                   error: Exception) -> tuple[str, AccessRequest]:
    """After the backend call of ``operation`` (held by this worker) failed with ``error``:
    retried later with backoff, or given up (grants only; a revocation is retried at the
    longest delay). Returns the outcome for :meth:`Metrics.backend_call` (temporary, permanent
    or unexpected) and the request as it is now; :class:`LeaseLost` when the lease was taken
    over meanwhile (nothing written)."""
    if isinstance(error, TemporaryBackendError):
        return "temporary", _postpone(ctx, operation, error.message, error.delay_seconds)
    if isinstance(error, PermanentBackendError | DomainError):
        return "permanent", _give_up(ctx, operation, error.message)
    # an adapter let a library error through: retry
    log.error("backend call for request %s failed unexpectedly", operation.request_id,
              exc_info=error)
    return "unexpected", _postpone(ctx, operation,
                                   f"unexpected error: {type(error).__name__}: {error}", None)


def _call_backend(ctx: Context, operation: Operation, request: AccessRequest,
                  parent: AccessRequest | None, started: datetime) -> GrantResult | None:
    granter = ctx.granter(request.cluster)
    ended_before = set() if operation.kind is OperationKind.REVOKE else \
        _ended_beside(ctx, parent or request, None)[0]
    if operation.kind is OperationKind.GRANT:
        scheduled.check_at_start(ctx, request, started)
        spec = spec_for(request, windows.planned_end(request, started))
        if operation.prepared is None:
            operation.prepared = granter.prepare(spec)
            if operation.prepared:  # nothing held before: a retry prepares the same nothing
                with ctx.transaction() as uow:
                    operation.lease_until = _hold(ctx, uow.operations, operation)
                    uow.operations.save(operation)
        granted = granter.grant(spec, operation.prepared)
        _share(ctx, request, granted.reference, keeps=spec)
        _check_none_ended_beside(ctx, request, granted.reference, ended_before)
        return granted
    if operation.kind is OperationKind.EXTEND:
        assert parent is not None
        with ctx.transaction() as uow:  # as it is now, not as when the extension was claimed
            parent = uow.requests.get(parent.id or 0)
            check_extensible(uow.operations, parent)
        spec = spec_for(parent, lifecycle.extended_end(request, parent))
        extended = granter.extend(spec, parent.backend_ref)
        _share(ctx, parent, extended.reference, keeps=spec)
        _check_none_ended_beside(ctx, parent, extended.reference, ended_before)
        return extended
    revoke_in_backend(ctx, request, started)
    return None


def revoke_in_backend(ctx: Context, request: AccessRequest, started: datetime) -> None:
    """Undo ``request``'s grant in its backend; what it shares with other live grants stays
    as they need it (:func:`_share`). ``started``: when the attempt began, for a grant with
    no end."""
    if not _share(ctx, request, request.backend_ref):
        ctx.granter(request.cluster).revoke(spec_for(request, request.ends_at or started),
                                            request.backend_ref)


def _share(ctx: Context, request: AccessRequest, reference: dict[str, Any],
           keeps: GrantSpec | None = None) -> bool:
    """Where ``request``'s backend object may be held by other grants too (two clusters' roles
    on one GitLab group), leave it as the live ones explain (:class:`SharedObjects`): the
    others, and ``request`` itself when it ``keeps`` it (just granted or extended, until
    ``keeps.ends_at``), at the highest level and the latest end they need; restored, or
    removed, when none remains. Every grant ending meanwhile (a revocation owed) counts as
    gone, so grants ending together, in one batch or on two workers, all leave it as the
    ones that stay need it, in whatever order they run. When ``request`` ends, the others'
    references are rewritten to carry what was there before the bot (audited: handed over).
    False when nothing is shared: the caller makes the plain call."""
    granter = ctx.granter(request.cluster)
    key = granter.shared_object(reference)
    if key is None or not isinstance(granter, SharedObjects):
        return False
    with ctx.transaction() as uow:
        live = [other for other in uow.requests.find(subject=request.subject,
                                                     states=[State.ACTIVE], kind=Kind.ACCESS,
                                                     limit=None)
                if other.id != request.id and other.ends_at is not None
                and other.cluster in ctx.granters  # a cluster since removed holds nothing
                and ctx.granter(other.cluster).shared_object(other.backend_ref) == key]
        staying = [other for other in live if not owes_revocation(uow.operations, other)]
    if keeps is not None and not staying:
        return True  # granted or extended alone: the backend call left it as it should be
    holders = [(spec_for(other, other.ends_at or ctx.clock()), other.backend_ref)
               for other in staying]
    if keeps is not None:
        holders.append((keeps, reference))
    references = granter.share(holders, [reference, *(other.backend_ref for other in live)])
    if staying and keeps is None:
        with ctx.transaction() as uow:
            for other, now_held in zip(staying, references, strict=False):
                current = uow.requests.get(other.id or 0, for_update=True)
                if current.state is State.ACTIVE and current.backend_ref != now_held:
                    current.backend_ref = now_held
                    uow.requests.save(current)
                    audit(uow.audit, ctx.clock(), POLICY_ACTOR, "handed over", current,
                          from_request=request.id, object=key)
        log.info("request %s ends; %s stays for request(s) %s", request.id, key,
                 ", ".join(str(other.id) for other in staying))
    return True


RECENT_GRANTS = 200
"""How many of a subject's newest grants :func:`_ended_beside` looks through."""


def _ended_beside(ctx: Context, request: AccessRequest, reference: dict[str, Any] | None,
                  ) -> tuple[set[int], list[AccessRequest]]:
    """Of the grants to ``request``'s subject (with ``reference``, those on the same shared
    backend object): the IDs of those that have ended, and those whose revocation is owed.
    Nothing for a backend that shares no object."""
    granter = ctx.granter(request.cluster)
    if not isinstance(granter, SharedObjects):
        return set(), []
    key = None if reference is None else granter.shared_object(reference)
    with ctx.transaction() as uow:
        others = [other for other in uow.requests.find(
                      subject=request.subject, kind=Kind.ACCESS, limit=RECENT_GRANTS,
                      states=[State.ACTIVE, State.EXPIRED, State.REVOKED])
                  if other.id != request.id and other.cluster in ctx.granters and (
                      key is None
                      or ctx.granter(other.cluster).shared_object(other.backend_ref) == key)]
        ending = [other for other in others if other.state is State.ACTIVE
                  and owes_revocation(uow.operations, other)]
    return {other.id or 0 for other in others if other.state is not State.ACTIVE}, ending


def _check_none_ended_beside(ctx: Context, request: AccessRequest, reference: dict[str, Any],
                             ended_before: set[int]) -> None:
    """After ``request``'s grant or extension left a shared backend object as it needs it
    (an attempt begun when the grants ``ended_before`` had ended): raise
    :class:`TemporaryBackendError` (try again) when another grant on that object is ending,
    or ended during the attempt. That grant did not count ``request`` as a holder (not active
    yet), or counted it at its old end, and may have removed the object, or shortened it,
    after this attempt read or wrote it; the next attempt makes it again as ``request`` needs
    it."""
    ended, ending = _ended_beside(ctx, request, reference)
    meanwhile = sorted({other.id or 0 for other in ending} | (ended - ended_before))
    if meanwhile:
        raise TemporaryBackendError(
            f"request {meanwhile[0]}, on the same access, was ending at the same time; "
            "trying again to make sure the access is there")


def check_extensible(operations: OperationQueue, grant: AccessRequest) -> None:
    """Refuse to extend ``grant`` (read in the transaction of ``operations``, its row locked
    where it will change) once it is no longer active or its revocation is owed: it is ending,
    in its backend already or soon, and an extension would leave it recorded as active, or
    extended, while its access ends. Whichever of an extension and the expiry of the same
    grant locks the grant first wins; the other is refused."""
    lifecycle.extended_end_allowed(grant)
    if owes_revocation(operations, grant):
        raise lifecycle.ending_refusal(grant)


def owes_revocation(operations: OperationQueue, request: AccessRequest) -> bool:
    """Whether ``request``'s revocation is owed and not yet done (under way, or retried)."""
    assert request.id is not None
    owed = operations.get(request.id, OperationKind.REVOKE)
    return owed is not None and owed.state is OperationState.PENDING


def _finish(operations: OperationQueue, operation: Operation, state: OperationState,
            error: str | None = None) -> None:
    operation.state = state
    operation.lease_owner = None
    operation.lease_until = None
    operation.last_error = error
    operations.save(operation)


def _finish_held(operations: OperationQueue, operation: Operation) -> None:
    """Mark ``operation`` done and release its lease, in one UPDATE fenced by the lease (its row
    locked first, as :func:`_hold` does), or raise :class:`LeaseLost`: the completion's
    transaction writes nothing then. ``operation`` itself is left as it was, for a retry of
    the transaction."""
    assert operation.id is not None and operation.lease_owner is not None
    if not operations.finish_many([operation.id], operation.lease_owner):
        raise LeaseLost(operation.lease_owner)


def _complete(ctx: Context, operation: Operation, result: GrantResult | None,
              started: datetime) -> AccessRequest:
    def commit() -> tuple[AccessRequest, list[Notice]]:
        now = ctx.clock()
        with ctx.transaction() as uow:
            _finish_held(uow.operations, operation)
            request = uow.requests.get(operation.request_id, for_update=True)
            notices = [ctx.prepared(uow, notice) for notice
                       in _apply(uow, operation, request, result, started, now)]
            ctx.settle(uow)
        operation.state, operation.last_error = OperationState.DONE, None
        operation.lease_owner = operation.lease_until = None
        return request, notices

    request, notices = retrying(commit)
    observe_expiry_lag(ctx, notices)
    ctx.notify(*notices)
    return request


def _apply(uow: UnitOfWork, operation: Operation, request: AccessRequest,
           result: GrantResult | None, started: datetime, now: datetime) -> list[Notice]:
    """Move the request (and its parent or extensions) now that the backend has done its part."""
    if operation.kind is OperationKind.GRANT:
        assert result is not None
        lifecycle.activate(request, started)
        request.backend_ref = result.reference
        uow.requests.save(request)
        audit(uow.audit, now, POLICY_ACTOR, "activated", request,
              ends_at=_iso(request.ends_at), backend=result.reference)
        return [Notice(NoticeKind.ACTIVE, request, delivery=result.delivery)]
    if operation.kind is OperationKind.EXTEND:
        assert result is not None and request.parent_id is not None
        parent = uow.requests.get(request.parent_id, for_update=True)
        check_extensible(uow.operations, parent)
        lifecycle.apply_extension(request, parent, started)
        parent.backend_ref = result.reference
        uow.requests.save(request)
        uow.requests.save(parent)
        audit(uow.audit, now, POLICY_ACTOR, "extended", parent, extension=request.id,
              ends_at=_iso(parent.ends_at))
        return [Notice(NoticeKind.EXTENDED, request, delivery=result.delivery, parent=parent)]
    extensions = uow.requests.find(parent_id=request.id, states=[State.ACTIVE])
    notice = end_grant(uow.audit, operation, request, extensions, now)
    uow.requests.save_many([request, *extensions])
    return [notice]


def end_grant(trail: AuditTrail, revocation: Operation, request: AccessRequest,
              extensions: list[AccessRequest], now: datetime) -> Notice:
    """Record in ``request`` (and its active ``extensions``, which end with it) that the
    backend confirmed ``revocation``: expired or revoked as its intent says, audited in
    ``trail``; the caller saves them. The notice for the grantee;
    :class:`InvalidTransition` when the request cannot end so (nothing changed)."""
    if revocation.intent.get("event") == "expire":
        lifecycle.expire(request, now)
        kind, action = NoticeKind.EXPIRED, "expired"
    else:
        lifecycle.revoke(request, revocation.intent.get("by", POLICY_ACTOR), now,
                         revocation.intent.get("reason", "revoked"))
        kind, action = NoticeKind.REVOKED, "revoked"
    for extension in extensions:
        lifecycle.end_with_parent(extension, request)
    audit(trail, now, request.ended_by or POLICY_ACTOR, action, request,
          reason=request.end_reason)
    return Notice(kind, request, actor=request.ended_by)


def observe_expiry_lag(ctx: Context, notices: list[Notice]) -> None:
    """Count how long after its end each expired grant of ``notices`` was revoked."""
    for notice in notices:
        ended = notice.request
        if notice.kind is NoticeKind.EXPIRED and ended.ended_at and ended.ends_at:
            ctx.metrics.expiry_lag((ended.ended_at - ended.ends_at).total_seconds())


def _postpone(ctx: Context, operation: Operation, error: str,
              hint: float | None) -> AccessRequest:
    gives_up = (operation.kind is not OperationKind.REVOKE
                and operation.attempts >= ctx.retry.grant_attempts)
    if gives_up:
        return _give_up(ctx, operation,
                        f"{error} (gave up after {operation.attempts} attempts)")
    now = ctx.clock()
    with ctx.transaction() as uow:
        _hold(ctx, uow.operations, operation)
        request = uow.requests.get(operation.request_id, for_update=True)
        request.last_error = error
        uow.requests.save(request)
        operation.next_attempt_at = now + ctx.retry.delay(operation.attempts, hint)
        _finish(uow.operations, operation, OperationState.PENDING, error)
        audit(uow.audit, now, POLICY_ACTOR, f"{operation.kind.value} attempt failed", request,
              attempt=operation.attempts, error=error,
              next_attempt_at=_iso(operation.next_attempt_at))
        first_failure = ctx.prepared(uow, Notice(NoticeKind.RETRYING, request)) \
            if operation.attempts == 1 else None
        ctx.settle(uow)
    log.warning("%s for request %s failed (attempt %s), retrying at %s: %s",
                operation.kind.value, request.id, operation.attempts,
                operation.next_attempt_at.isoformat(), error)
    if first_failure is not None:
        ctx.notify(first_failure)
    return request


def _give_up(ctx: Context, operation: Operation, error: str) -> AccessRequest:
    if operation.kind is OperationKind.REVOKE:
        # Access must end: a refusal is retried at the longest delay until it is confirmed.
        return _postpone(ctx, operation, error, ctx.retry.max_delay.total_seconds())
    now = ctx.clock()
    with ctx.transaction() as uow:
        _hold(ctx, uow.operations, operation)
        request = uow.requests.get(operation.request_id, for_update=True)
        try:
            lifecycle.fail(request, now, error)
        except InvalidTransition:
            log.warning("request %s is %s; not marking it failed", request.id, request.state)
        uow.requests.save(request)
        _finish(uow.operations, operation, OperationState.FAILED, error)
        audit(uow.audit, now, POLICY_ACTOR, f"{operation.kind.value} failed", request, error=error)
        failed = ctx.prepared(uow, Notice(NoticeKind.FAILED, request))
        ctx.settle(uow)
    log.error("%s for request %s failed for good: %s", operation.kind.value, request.id, error)
    ctx.notify(failed)
    return request


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


