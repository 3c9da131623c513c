"""What ends a grant, and what finds the grants that should have ended: revocation, expiry at
the end of a grant's time, and reconciliation of what the backends hold against the records.

Revocation and expiry owe a revocation in the database and hand it to the operation engine
(:mod:`bot.services.operations`), which calls the backend and records the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain import lifecycle
from bot.domain.errors import (
    InvalidTransition,
    NotFound,
    PermanentBackendError,
    TemporaryBackendError,
)
from bot.domain.model import (
    AccessRequest,
    Actor,
    Kind,
    OperationKind,
    State,
)
from bot.domain.ports import AccessRequests, ManagedGrant, Notice, Reconcilable, UnitOfWork
from bot.logcontext import scoped
from bot.services import revocations
from bot.services.context import Context, audit
from bot.services.fanout import fan_out
from bot.services.operations import owe, run_operation

log = logging.getLogger(__name__)


# --- revocation and expiry ----------------------------------------------------------------


def revoke(ctx: Context, request_id: int, user_id: str, reason: str) -> AccessRequest:
    """End an active grant early: the grantee, the cluster's approvers and admins may."""
    actor = ctx.actor(user_id)
    return revoke_as(ctx, request_id, actor, reason)


@scoped
def revoke_as(ctx: Context, request_id: int, actor: Actor, reason: str,
              also: Callable[[UnitOfWork, AccessRequest], None] | None = None) -> AccessRequest:
    """``also``: more to check and record in the transaction that owes the revocation, with
    the grant's row locked (an access review's decision); what it raises refuses it all."""
    now = ctx.clock()
    with ctx.transaction() as uow:
        request = uow.requests.get(request_id, for_update=True)
        policy = ctx.config.policy(request.cluster, request.role)
        if also is not None:  # first: it may refuse before the grant's state is told
            also(uow, request)
        if request.kind is not Kind.ACCESS:
            raise InvalidTransition(
                f"Request {request.label} is an extension: revoke its grant #{request.parent_id}."
            )
        lifecycle.check_revoke(request, actor, policy)
        operation = owe(uow.operations, request, OperationKind.REVOKE, now, event="revoke",
                        by=actor.user_id, reason=reason.strip() or "revoked")
        if operation is None:
            raise InvalidTransition(f"Request {request.label} is already being revoked.")
        audit(uow.audit, now, actor.user_id, "revocation requested", request, reason=reason)
    return run_operation(ctx, operation) or get(ctx, request_id)


def expire_due(ctx: Context, limit: int | None = None) -> int:
    """Revoke every grant whose time is up, ``limit`` (the tuning's ``batches.expire``) at a
    time, each batch claimed, revoked and completed together
    (:mod:`bot.services.revocations`); batch after batch until none is due or the pass has
    run for one sweep interval (``schedules.expiry_sweep``; the next pass takes the rest).
    Then the grantees are told, a few at a time (``Concurrency.messages``): ending access
    comes first, and telling thousands while ending them would slow the ending. A pass that
    fails part way (the database gone) still tells those its earlier batches ended; the
    batch that failed is finished, and told, by the retry pass. Returns how many revocations
    this pass owed (not those another replica claimed)."""
    size = ctx.tuning.batches.expire if limit is None else limit
    ends = time.monotonic() + ctx.config.schedules.expiry_sweep.total_seconds()
    owed, notices = 0, []
    try:
        while True:
            batch = revocations.claim_expired(ctx, size)
            owed += len(batch.claimed)
            notices += revocations.run_batch(ctx, batch)
            if batch.found < size or time.monotonic() >= ends:
                break
    finally:
        _tell(ctx, notices)
    return owed


def next_expiry(ctx: Context) -> datetime | None:
    """When the next grant :func:`expire_due` would revoke comes due (UTC; in the past when
    one is due already), or ``None`` when no active grant is left to end. A grant whose
    revocation is owed already (under way, or failed and left to the retry pass) does not
    count: it is not this pass's to end."""
    with ctx.transaction() as uow:
        return uow.requests.next_to_expire()


def _tell(ctx: Context, notices: list[Notice]) -> None:
    """Send ``notices``, a few at a time while Slack keeps them waiting
    (``Concurrency.messages``, :func:`bot.services.fanout.fan_out`)."""
    fan_out(ctx.notify, notices, ctx.tuning.concurrency.messages, "expiry-notices")


RECONCILE_GRACE = timedelta(minutes=5)
"""What a backend made this recently is never judged a stray: its grant may be on its way."""


@dataclass(frozen=True)
class Stray:
    cluster: str
    grant: ManagedGrant
    why: str
    removed: bool


def reconcile(ctx: Context, fix: bool = False, grace: timedelta = RECONCILE_GRACE) -> list[Stray]:
    """Find what each cluster's backend holds as the bot's that no grant explains; remove it on
    ``fix``.

    Whatever was read before, each object is judged in the transaction that records its removal,
    with its request's row locked: a request that is not ended (pending, approved and being
    provisioned, or active) explains it, and an approval cannot slip in between the judgement and
    the removal. Objects younger than ``grace`` and objects only the records could claim but do
    not are reported at most, never removed.
    """
    strays: list[Stray] = []
    unreadable: list[str] = []
    for cluster, granter in ctx.granters.items():
        if not isinstance(granter, Reconcilable):
            continue
        try:
            holdings = granter.managed()
        except (TemporaryBackendError, PermanentBackendError) as error:
            log.error("reconcile cannot read cluster %s: %s", cluster, error.message)
            unreadable.append(f"{cluster}: {error.message}")
            continue
        for held in holdings:
            if held.created_at is None or ctx.clock() - held.created_at < grace:
                continue
            stray = _judge(ctx, cluster, granter, held, fix)
            if stray is not None:
                log.warning("stray %s on %s (%s)%s", held.describe(), cluster, stray.why,
                            ": removed" if stray.removed else "")
                strays.append(stray)
    if unreadable:  # the other clusters were judged; say which could not be
        raise TemporaryBackendError("reconcile could not read " + "; ".join(unreadable))
    return strays


def _judge(ctx: Context, cluster: str, granter: Reconcilable, held: ManagedGrant,
           fix: bool) -> Stray | None:
    """One object, judged and (on ``fix``) removed inside one transaction."""
    with ctx.transaction() as uow:
        verdict = _verdict(uow.requests, cluster, granter, held)
        if verdict is None:
            return None
        why, removable = verdict
        if not (fix and removable):
            return Stray(cluster, held, why, removed=False)
        try:
            granter.remove(held)
        except (TemporaryBackendError, PermanentBackendError) as error:
            return Stray(cluster, held, f"{why}; removal failed: {error.message}", removed=False)
        audit(uow.audit, ctx.clock(), "reconcile", "stray removed", None,
              cluster=cluster, binding=held.describe(), subject=held.subject,
              claimed_request=held.request_id, why=why)
    return Stray(cluster, held, why, removed=True)


def _verdict(requests: AccessRequests, cluster: str, granter: Reconcilable,
             held: ManagedGrant) -> tuple[str, bool] | None:
    """None when a live request explains ``held``; else why it is a stray and whether the bot
    may remove it (only what its labels or its records prove to be its own)."""
    if held.request_id is None:
        if held.owned:
            return "labelled as this bot's for this cluster, but names no request", True
        return _verdict_by_subject(requests, cluster, granter, held)
    try:
        request: AccessRequest | None = requests.get(held.request_id, for_update=True)
    except NotFound:
        request = None
    if request is None:
        if held.owned:
            return "no request of this bot has this ID", True
        return ("labelled as the bot's by an older version, but no request of this bot has "
                "this ID; left alone"), False
    if request.cluster != cluster:
        if held.owned:
            return f"request #{request.id} is for cluster {request.cluster}", True
        return None  # an older version's binding of another cluster: that cluster judges it
    if request.subject != held.subject:
        if held.owned:
            return f"request #{request.id} is for {request.subject}, not {held.subject}", True
        return (f"request #{request.id} is for {request.subject}, not {held.subject}; an older "
                "version's label alone does not prove it the bot's, left alone"), False
    if not request.state.is_final:
        return None
    return f"request #{request.id} is {request.state.value}", True


def _verdict_by_subject(requests: AccessRequests, cluster: str, granter: Reconcilable,
                        held: ManagedGrant) -> tuple[str, bool] | None:
    """For what names no request (a GitLab membership): the cluster's requests for its subject
    decide, the live ones locked."""
    if held.subject is None:
        return None
    records = [r for r in requests.find(clusters=[cluster], subject=held.subject,
                                        kind=Kind.ACCESS, limit=None)
               if granter.explained_by(held, r)]
    for request in records:
        assert request.id is not None
        if not request.state.is_final and \
                not requests.get(request.id, for_update=True).state.is_final:
            return None
    created = [r for r in records
               if (r.backend_ref.get("action") == "created" or r.state is State.FAILED)
               and (held.created_at is None or held.created_at >= r.created_at)]
    if not created:
        return ("made by the bot's account, but no request of this bot made it; left "
                "alone"), False
    return (f"made for request #{created[0].id} ({created[0].state.value}); no live grant "
            "explains it"), True


def reconcile_and_fix(ctx: Context) -> int:
    """The scheduled form: remove strays, return how many."""
    return sum(stray.removed for stray in reconcile(ctx, fix=True))


def get(ctx: Context, request_id: int) -> AccessRequest:
    """The request as it is stored now; :class:`NotFound` when there is none."""
    with ctx.transaction() as uow:
        return uow.requests.get(request_id)
