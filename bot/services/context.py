"""What every use case receives: the configuration, the tuning and the ports, bundled once at
start-up. :class:`RetryPolicy` is read with the other settings (:mod:`bot.config`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from bot.config import Config, RetryPolicy, Tuning
from bot.domain.errors import ConcurrentModification, NotFound, Undeliverable
from bot.domain.model import AccessRequest, Actor, AuditEvent, Reach
from bot.domain.oncall import OnCall
from bot.domain.ports import (
    AuditTrail,
    Directory,
    Granter,
    IdentityLinks,
    Metrics,
    Notice,
    Notifier,
    UnitOfWork,
    UserInfo,
)
from bot.domain.stream import AuditStream

log = logging.getLogger(__name__)
T = TypeVar("T")


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


_committed_events: ContextVar[list[tuple[str, str]] | None] = ContextVar(
    "committed_events", default=None)


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
        return UserInfo(slack_user_id=user_id, email=email, name=info.name, links=linked)

    def notify(self, *notices: Notice) -> None:
        """Tell people, after the commit; a failing notifier never undoes what happened."""
        for notice in notices:
            self.announce(notice)

    def announce(self, notice: Notice) -> Reach | None:
        """Tell people, after the commit, and say where it went (see ``Notifier.notify``);
        None when the notifier failed or cannot know."""
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
            with self.unit_of_work() as uow:
                yield uow
                uow.commit()
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


def retrying(action: Callable[[], T], attempts: int = 5) -> T:
    """Run a transactional action again when a concurrent writer won the race."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ConcurrentModification:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")
