"""What every use case receives: the configuration, the tuning and the ports, bundled once at
start-up. :class:`RetryPolicy` is read with the other settings (:mod:`bot.config`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from bot.config import Config, RetryPolicy, Tuning
from bot.domain import lifecycle
from bot.domain.errors import ConcurrentModification, NotFound, Undeliverable
from bot.domain.model import AccessRequest, Actor, AuditEvent, MessageRef, Reach
from bot.domain.oncall import OnCall
from bot.domain.ports import (
    AccessRequests,
    Audience,
    AuditTrail,
    Directory,
    Granter,
    IdentityLinks,
    MessageReferences,
    Metrics,
    Notice,
    NoticeKind,
    Notifier,
    Posted,
    UnitOfWork,
    UserInfo,
)
from bot.domain.stream import AuditStream

log = logging.getLogger(__name__)
T = TypeVar("T")

APPROVAL_MESSAGES = "approval"
"""The purpose under which a request's approval messages are stored."""
CATCH_UP_ROUNDS = 5
"""How many times one notice's sender shows its approval messages again while the request
keeps changing under it (:meth:`Context.shown`)."""


class NullMetrics:
    """Counts nothing: for the CLI and tests that do not look."""

    def event(self, action: str, cluster: str) -> None:
        pass

    def backend_call(self, operation: str, cluster: str, seconds: float, outcome: str) -> None:
        pass

    def job_run(self, job: str, seconds: float, handled: int, ok: bool) -> None:
        pass

    def expiry_lag(self, seconds: float) -> None:
        pass

    def undelivered(self, purpose: str, error: str, kind: str) -> None:
        pass

    def review_unreviewed(self, cluster: str, count: int) -> None:
        pass


_committed_events: ContextVar[list[tuple[str, str]] | None] = ContextVar(
    "committed_events", default=None)


@dataclass
class Receipt:
    """What asked for the work running on this thread (a Slack request kept in the inbox),
    marked done by the use case inside its last transaction (:meth:`Context.settle`): done
    exactly when that transaction commits, so a crash before the commit runs the work again
    and none after it does. ``mark_done`` does it inside a unit of work of the same database.
    """

    mark_done: Callable[[UnitOfWork], None]
    done: bool = False
    """The transaction that marked it has committed; its owner need not mark it again."""
    staged_in: UnitOfWork | None = None


_receipt: ContextVar[Receipt | None] = ContextVar("receipt", default=None)


@contextmanager
def receipt(mark_done: Callable[[UnitOfWork], None]) -> Iterator[Receipt]:
    """Run the block's use cases for work that ``mark_done`` marks done; the receipt says
    afterwards whether one of them did."""
    held = Receipt(mark_done)
    token = _receipt.set(held)
    try:
        yield held
    finally:
        _receipt.reset(token)


@dataclass
class Expected:
    """The request someone named from a place that says what it must be (a button in a
    message): ``check`` sees it, or None when there is none, the first time a use case reads
    it, before anything is decided, and raises to refuse. See :func:`expecting`."""

    request_id: int
    check: Callable[[AccessRequest | None], None]
    passed: bool = False
    """The check let it through: what the use case goes on to do reads it unchecked."""


_expected: ContextVar[Expected | None] = ContextVar("expected", default=None)


@contextmanager
def expecting(request_id: int, check: Callable[[AccessRequest | None], None]) -> Iterator[None]:
    """Run the block's use cases with request ``request_id`` shown to ``check`` as each reads
    it, in the use case's own transaction: the check costs no transaction of its own."""
    token = _expected.set(Expected(request_id, check))
    try:
        yield
    finally:
        _expected.reset(token)


class _ExpectedRequests:
    """A request store that shows the expected request to its check as it is read."""

    def __init__(self, requests: AccessRequests, expected: Expected) -> None:
        self._requests = requests
        self._expected = expected

    def get(self, request_id: int, *, for_update: bool = False) -> AccessRequest:
        if request_id != self._expected.request_id or self._expected.passed:
            return self._requests.get(request_id, for_update=for_update)
        try:
            found = self._requests.get(request_id, for_update=for_update)
        except NotFound:
            self._expected.check(None)
            raise
        self._expected.check(found)
        self._expected.passed = True
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._requests, name)


class _ExpectingUnitOfWork:
    """A unit of work whose request store is :class:`_ExpectedRequests`."""

    def __init__(self, uow: UnitOfWork, expected: Expected) -> None:
        self.opened = uow
        """The unit of work itself (what an adapter's own use of it expects)."""
        self.requests = cast(AccessRequests, _ExpectedRequests(uow.requests, expected))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.opened, name)


@dataclass(frozen=True)
class Context:
    config: Config
    unit_of_work: Callable[[], UnitOfWork]
    granters: Mapping[str, Granter]
    notifier: Notifier
    directory: Directory
    clock: Callable[[], datetime]
    worker_id: str = "worker"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Backoff and operation leases (:attr:`bot.config.Settings.retry`)."""
    tuning: Tuning = field(default_factory=Tuning)
    """Concurrency and batch sizes of the passes (:attr:`bot.config.Settings.tuning`)."""
    metrics: Metrics = field(default_factory=NullMetrics)
    on_call: OnCall | None = None
    """Who is on call (PagerDuty, Opsgenie); None when no role auto-approves on call."""
    stream: AuditStream | None = None
    """The audit stream's outbox and sinks; None when no sink is configured."""

    def granter(self, cluster: str) -> Granter:
        try:
            return self.granters[cluster]
        except KeyError:
            raise NotFound(f"No backend is configured for cluster {cluster}.") from None

    def actor(self, user_id: str) -> Actor:
        groups = self.config.all_approver_groups()
        member_of = self.directory.groups_of(user_id, groups) if groups else frozenset()
        return self.config.actor(user_id, member_of)

    def user_info(self, user_id: str, links: IdentityLinks) -> UserInfo:
        """Directory facts, overridden by the config's explicit mapping and confirmed links."""
        info = self.directory.user_info(user_id)
        linked: dict[str, str] = {}
        link = links.get(user_id, "gitlab")
        if link is not None and link.confirmed:
            linked["gitlab"] = link.username
        mapping = self.config.user(user_id)
        if mapping is not None:
            linked.update({k: v for k, v in
                          (("gitlab", mapping.gitlab), ("kubernetes", mapping.kubernetes))
                          if v})
        email = mapping.email if mapping is not None and mapping.email else info.email
        return dataclasses.replace(info, slack_user_id=user_id, email=email, links=linked)

    # --- what notices need --------------------------------------------------------------

    def admins(self) -> tuple[str, ...]:
        """The admins as users, their groups expanded; a group that cannot be listed now is
        left out (the directory logs it), so that the others are still told."""
        return tuple(sorted(self.directory.users(self.config.file.admins).users))

    def approvers(self, request: AccessRequest) -> Audience:
        """The approvers of ``request`` one by one, user groups expanded, never the
        requester nor the grantee."""
        policy = self.config.policy(request.cluster, request.role)
        people = self.directory.users(policy.approvers)
        return Audience(approvers=tuple(sorted(people.users - request.parties)),
                        unlisted=people.unlisted)

    def tell_approvers(self, notice: Notice,
                       send: Callable[[Notice], Posted | None] | None = None) -> Reach | None:
        """Ask the approvers to decide on ``notice``'s request (``FILED``, or ``STILL_PENDING``
        with no message to answer): in their conversation; where there is none, or the bot
        cannot post there, each approver on their own, user groups expanded only then (a
        directory that is down costs nothing while the conversation works). What was posted
        is stored; returns where it went, None where that cannot be known. ``send`` is the
        notifier (its failures logged and swallowed) unless given."""
        send = send or self._send
        request = notice.request
        conversation = self.config.approvers_channel(request.cluster, request.role)
        first = Posted(Reach())
        if conversation:
            tried = send(dataclasses.replace(notice, audience=Audience(conversation=conversation)))
            if tried is None or tried.reach is None or tried.reach.reached:
                return self.shown(notice, tried)
            first = tried
        each = send(dataclasses.replace(notice, audience=self.approvers(request)))
        if each is None or each.reach is None:
            return None
        refused = first.reach.undelivered if first.reach is not None else ()
        return self.shown(notice, Posted(
            dataclasses.replace(each.reach, undelivered=refused + each.reach.undelivered),
            first.messages + each.messages))

    def prepared(self, uow: UnitOfWork, notice: Notice) -> Notice:
        """``notice`` with what the approval messages show, read inside ``uow``'s
        transaction: the approvals still missing, and where the request's (and its parent's)
        approval messages were posted."""
        return dataclasses.replace(
            notice,
            approvals_missing=self.missing_approvals(notice.request),
            messages=_approval_messages(uow.messages, notice.request),
            parent_messages=_approval_messages(uow.messages, notice.parent)
            if notice.parent is not None else ())

    def missing_approvals(self, request: AccessRequest) -> int:
        """How many approvals ``request`` still waits for under its role's policy (0 for a
        role no longer configured): :func:`bot.domain.lifecycle.approvals_missing`."""
        policy = self.config.policies.get((request.cluster, request.role))
        return lifecycle.approvals_missing(request, policy) if policy is not None else 0

    def settle(self, uow: UnitOfWork) -> None:
        """Mark what asked for the running use case (a :class:`Receipt`, when there is one)
        done in ``uow``'s transaction: call it in the use case's last transaction, the one
        after whose commit running the work again would change nothing."""
        held = _receipt.get()
        if held is not None and not held.done:
            held.mark_done(uow.opened if isinstance(uow, _ExpectingUnitOfWork) else uow)
            held.staged_in = uow

    def remember(self, notice: Notice, posted: Posted | None) -> Reach | None:
        """Store the approval messages the notifier posted for ``notice``, so that the
        notices that follow update them; where the approvers were told."""
        if posted is None:
            return None
        if posted.messages:
            assert notice.request.id is not None
            with self.transaction() as uow:
                for ref in posted.messages:
                    uow.messages.add(notice.request.id, APPROVAL_MESSAGES, ref)
        return posted.reach

    def notify(self, *notices: Notice) -> None:
        """Tell people, after the commit; a failing notifier never undoes what happened."""
        for notice in notices:
            self.announce(notice)

    def prepared_all(self, uow: UnitOfWork, notices: Sequence[Notice]) -> list[Notice]:
        """:meth:`prepared` for each of ``notices``, their approval messages read together."""
        ids = {n.request.id for n in notices} | {n.parent.id for n in notices if n.parent}
        posted = uow.messages.list_many({i for i in ids if i is not None}, APPROVAL_MESSAGES)

        def messages(request: AccessRequest | None) -> tuple[MessageRef, ...]:
            return tuple(posted.get(request.id or 0, ())) if request is not None else ()

        return [dataclasses.replace(
            notice, approvals_missing=self.missing_approvals(notice.request),
            messages=messages(notice.request), parent_messages=messages(notice.parent))
            for notice in notices]

    def announce(self, notice: Notice) -> Reach | None:
        """Tell people, after the commit, and say where it went (see ``Notifier.notify``);
        None when the notifier failed or cannot know."""
        return self.shown(notice, self._send(notice))

    def shown(self, notice: Notice, posted: Posted | None) -> Reach | None:
        """:meth:`remember` what was posted for ``notice``, then make sure its approval
        messages do not stay behind the request.

        Decisions on one request race (two approvers at the same moment, a denial or a
        cancellation against an approval, a command before the message was stored): each
        notice is read after its own commit, but the updates may reach Slack in either
        order, the older last. So the sender of a notice that showed the request still open
        to decision reads its version again after the update, and while it moved shows the
        request as it stands now and reads again: whoever's update lands last has then seen
        every change committed before it. A request no longer open to decision is changed
        only by whoever holds it, whose own notice follows."""
        reach = self.remember(notice, posted)
        request = notice.request
        if request.id is None or not lifecycle.open_to_decision(request) or not (
                notice.messages or (posted is not None and posted.messages)):
            return reach
        try:
            self._catch_up(request)
        except Exception:  # what happened stands; the next decision shows it
            log.exception("request %s: its approval messages could not be checked against "
                          "the request", request.id)
        return reach

    def _catch_up(self, shown: AccessRequest) -> None:
        """Show the request in its approval messages again while it is newer than ``shown``."""
        assert shown.id is not None
        for _ in range(CATCH_UP_ROUNDS):
            with self.transaction() as uow:
                latest = uow.requests.get(shown.id)
                if latest.version == shown.version:
                    return
                refreshed = self.prepared(uow, Notice(NoticeKind.REFRESHED, latest))
            self._send(refreshed)
            shown = latest
        log.warning("request %s kept changing while its approval messages were updated",
                    shown.id)

    def _send(self, notice: Notice) -> Posted | None:
        """What the notifier posted for ``notice``; None when it failed (logged)."""
        try:
            return self.notifier.notify(notice)
        except Undeliverable as error:  # logged and counted where it happened
            log.warning("notification %s for request %s was not delivered: %s",
                        notice.kind, notice.request.id, error.message)
            return None
        except Exception:
            log.exception(
                "notification %s for request %s failed", notice.kind, notice.request.id
            )
            return None

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """One unit of work, its stores sharing one transaction; commits when the block ends
        without an error. The actions it audited are counted once it has committed."""
        events: list[tuple[str, str]] = []
        token = _committed_events.set(events)
        try:
            with self.unit_of_work() as opened:
                expected = _expected.get()
                uow = opened if expected is None else cast(
                    UnitOfWork, _ExpectingUnitOfWork(opened, expected))
                yield uow
                uow.commit()
                held = _receipt.get()
                if held is not None and held.staged_in is uow:
                    held.done = True
        finally:
            _committed_events.reset(token)
        for action, cluster in events:
            self.metrics.event(action, cluster)


def audit(
    trail: AuditTrail,
    now: datetime,
    actor: str,
    action: str,
    request: AccessRequest | None = None,
    **details: Any,
) -> None:
    pending = _committed_events.get()
    if pending is not None:
        pending.append((action, request.cluster if request is not None
                        else str(details.get("cluster", "-"))))
    trail.record(
        AuditEvent(
            at=now,
            actor=actor,
            action=action,
            request_id=request.id if request is not None else None,
            details={k: v for k, v in details.items() if v is not None},
        )
    )


def _approval_messages(messages: MessageReferences,
                       request: AccessRequest) -> tuple[MessageRef, ...]:
    assert request.id is not None
    return tuple(messages.list(request.id, APPROVAL_MESSAGES))


def retrying(action: Callable[[], T], attempts: int = 5) -> T:
    """Run a transactional action again when a concurrent writer won the race."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ConcurrentModification:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
