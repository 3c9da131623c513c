"""The audit stream: every audit event, also delivered to the sinks an operator configures (a
SIEM's webhook, a file or standard output for a log shipper).

Delivery goes through an outbox written in the transaction that writes the audit event: one row
per event and sink. Delivery workers on any replica lease rows, deliver them, and mark them
delivered or postpone them with back-off. A sink that fails holds back only its own rows.

This module holds the ports and the pure rules: the event's type and its data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from bot.domain.errors import DomainError
from bot.domain.model import AuditEvent

EVENT_TYPE_PREFIX = "com.k8s-access-bot."


def event_type(action: str) -> str:
    """The CloudEvents ``type`` of an audit action: ``com.k8s-access-bot.`` and the action in
    lowercase, each run of other characters than letters and digits written ``-``
    (``approval recorded`` → ``com.k8s-access-bot.approval-recorded``)."""
    normalised = re.sub(r"[^a-z0-9]+", "-", action.lower()).strip("-")
    return EVENT_TYPE_PREFIX + (normalised or "unknown")


def audit_record(event: AuditEvent) -> dict[str, Any]:
    """The audit row as JSON-ready data: ``id``, ``at`` (ISO 8601), ``actor``, ``action``,
    ``request_id`` (or None) and ``details``; the same fields ``audit export`` writes."""
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "request_id": event.request_id,
        "details": event.details,
    }


class SinkUnavailable(DomainError):
    """A sink did not take an event (a receiver down, slow, answering an error; a disk full).
    The event waits in the outbox and is offered again after a back-off. The message names the
    sink's target and the reason, never a secret."""


@dataclass(frozen=True)
class PendingDelivery:
    """One outbox row leased to this worker: ``event`` owed to the sink named ``sink``."""

    id: int
    sink: str
    attempts: int
    """Failed attempts so far."""
    event: AuditEvent


@dataclass(frozen=True)
class SinkBacklog:
    """What one sink has not received yet."""

    waiting: int
    oldest_at: datetime | None
    """When the oldest undelivered event happened; None when nothing waits."""
    attempts: int
    """Failed attempts in a row on the undelivered events (the most any one has had)."""
    last_error: str | None

    def lag(self, now: datetime) -> timedelta:
        """How far the sink is behind: the age of its oldest undelivered event (zero when none
        waits)."""
        return max(now - self.oldest_at, timedelta(0)) if self.oldest_at else timedelta(0)


class AuditOutbox(Protocol):
    """The outbox rows, across replicas (``SqlAlchemyAuditOutbox``)."""

    def claim(self, sink: str, owner: str, now: datetime, until: datetime,
              limit: int) -> list[PendingDelivery]:
        """Lease up to ``limit`` rows of ``sink`` that are due at ``now`` and that nobody
        holds, oldest event first, to ``owner`` until ``until``; none while the sink backs off
        (a row of it that failed is not due yet). Two workers never hold the same row at
        once."""
        ...

    def delivered(self, ids: Sequence[int], now: datetime) -> None:
        """Mark rows delivered at ``now``; they are never offered again."""
        ...

    def release(self, ids: Sequence[int], owner: str) -> None:
        """Give ``owner``'s lease on rows back, unattempted: they are due again at once."""
        ...

    def failed(self, delivery_id: int, error: str) -> int:
        """Count a failed attempt on a row and keep ``error``; returns the most failed attempts
        any undelivered row of its sink has now (the sink's failures in a row)."""
        ...

    def postpone(self, delivery_id: int, until: datetime) -> None:
        """Offer a row that failed again at ``until``, and release it. Until then its sink
        backs off: :meth:`claim` gives none of the sink's rows."""
        ...

    def backlog(self, sinks: Sequence[str]) -> dict[str, SinkBacklog]:
        """What each of ``sinks`` has not received yet."""
        ...

    def forget(self, delivered_before: datetime, sinks: Sequence[str]) -> int:
        """Delete rows delivered before ``delivered_before``, and rows owed to a sink not among
        ``sinks`` (removed from the configuration) that nothing has offered since then; how
        many. The audit log itself keeps every event."""
        ...


class AuditSink(Protocol):
    """Where audit events go: a webhook, a file, standard output."""

    @property
    def name(self) -> str:
        """Unique among the configured sinks; the outbox rows carry it."""
        ...

    def send(self, event: AuditEvent) -> None:
        """Deliver one event (it may be buffered until :meth:`flush`).
        :class:`SinkUnavailable` when it was not taken."""
        ...

    def flush(self) -> None:
        """Make what :meth:`send` took durable. :class:`SinkUnavailable` when it could not;
        then every event since the last flush counts as not delivered."""
        ...


@runtime_checkable
class StreamMetrics(Protocol):
    def stream_delivered(self, sink: str, count: int) -> None: ...

    def stream_failure(self, sink: str) -> None: ...


class NullStreamMetrics:
    def stream_delivered(self, sink: str, count: int) -> None:
        pass

    def stream_failure(self, sink: str) -> None:
        pass


@dataclass(frozen=True)
class AuditStream:
    """The outbox and the configured sinks, for the delivery job and ``/readyz``."""

    outbox: AuditOutbox
    sinks: Sequence[AuditSink]
    metrics: StreamMetrics = field(default_factory=NullStreamMetrics)
