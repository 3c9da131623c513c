"""Sending what a pass claimed, once: a reminder's key, a request's reminder or escalation
counter. A send that failed for a reason that may pass (Slack rate-limiting or down) gives its
claim back so that the next pass tries again; one Slack refused for good keeps it, logged, so
that it is never sent again unchanged every minute. Shared by the reminder and escalation
passes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from bot.domain.errors import ConcurrentModification, Undeliverable
from bot.domain.model import AccessRequest, Reach
from bot.domain.policy import RolePolicy
from bot.domain.ports import Notice, NoticeKind
from bot.services.context import Context, retrying

log = logging.getLogger(__name__)

Counter = Literal["renotified", "escalations_applied"]
"""What a pass counts on a request to claim its work there."""

T = TypeVar("T")


@dataclass(frozen=True)
class Claim(Generic[T]):
    """A counter a pass advanced on a request: the notice to send for it, the counter before
    and after, and what the rule that advanced it returned."""

    notice: Notice
    counter: Counter
    before: int
    after: int
    found: T


def claim(ctx: Context, request_id: int, counter: Counter, kind: NoticeKind,
          advance: Callable[[AccessRequest, RolePolicy, datetime], T]) -> Claim[T] | None:
    """Advance ``counter`` on a request by the rule ``advance(request, policy, now)``, in a
    transaction of its own with the request's row locked, and prepare the notice of ``kind``;
    None when the request has no policy or the rule advanced nothing (another replica, or a
    decision, came first)."""

    def take() -> Claim[T] | None:
        now = ctx.clock()
        with ctx.transaction() as uow:
            request = uow.requests.get(request_id, for_update=True)
            policy = ctx.config.policies.get((request.cluster, request.role))
            if policy is None:
                return None
            before = getattr(request, counter)
            found = advance(request, policy, now)
            after = getattr(request, counter)
            if after == before:
                return None
            uow.requests.save(request)
            return Claim(ctx.prepared(uow, Notice(kind, request)), counter, before, after, found)

    return retrying(take)


def deliver(ctx: Context, what: str, claimed: Claim[T], send: Callable[[], object]) -> bool:
    """:func:`sent` for a claim on a request: its counter is given back when the send may work
    later. True when sent."""
    request_id = claimed.notice.request.id
    assert request_id is not None
    return sent(what, send, lambda: give_back(ctx, request_id, claimed.counter, claimed.before,
                                              claimed.after))


def sent(what: str, send: Callable[[], object], give_back: Callable[[], None]) -> bool:
    """Send what was claimed; when it failed for a reason that may pass, ``give_back`` the
    claim so that the next pass tries again. A message Slack refused for good keeps its
    claim (logged). True when sent."""
    try:
        send()
    except Undeliverable as error:
        if not error.retryable:
            log.error("%s was not delivered and is not tried again: %s (%s)", what,
                      error.message, error.kind)
            return False
        log.warning("%s was not delivered; it will be tried again: %s", what, error.message)
        give_back()
        return False
    except Exception:
        log.exception("sending %s failed; it will be tried again", what)
        give_back()
        return False
    return True


def give_back(ctx: Context, request_id: int, counter: Counter, before: int,
              claimed: int) -> None:
    """Give back what a pass claimed on a request by counting it (its reminders sent, its
    escalation steps applied), unless the request moved on meanwhile: the next pass claims
    it again."""
    try:
        with ctx.transaction() as uow:
            request = uow.requests.get(request_id, for_update=True)
            if getattr(request, counter) == claimed:
                setattr(request, counter, before)
                uow.requests.save(request)
    except ConcurrentModification:
        log.info("request %s changed meanwhile; its %s is not given back", request_id, counter)


def check_reached(request: AccessRequest, reach: Reach | None) -> None:
    """Raise :class:`Undeliverable` when ``reach`` reached nobody: temporary when some of it
    failed for a reason that may pass (Slack down or rate-limiting), so that the caller gives
    its claim back (:func:`sent`). A notifier that cannot say (None) is taken at its word."""
    if reach is None or reach.reached:
        return
    first = reach.undelivered[0] if reach.undelivered else None
    raise Undeliverable(
        f"request {request.id} still reached no approver: "
        + (", ".join(f"{u.recipient} {u.error}" for u in reach.undelivered) or "none set"),
        recipient=first.recipient if first else "-",
        error=first.error if first else "no_approvers",
        kind=Undeliverable.TEMPORARY if reach.may_reach_later else Undeliverable.RECIPIENT)
