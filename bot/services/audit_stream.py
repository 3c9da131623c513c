"""Delivering the audit stream: the outbox's due rows to their sinks, at least once each.

One pass (:func:`deliver`, the ``stream`` job) gives every configured sink its own thread, so a
sink that is down or slow holds back only its own events: each sink leases a batch of due rows,
sends them in the order they happened, and marks what arrived delivered. The first failure
ends the sink's turn: the failed event waits for an exponential back-off (5 s doubling to
10 min), and while it waits the outbox offers none of that sink's events; after it, the sink
gets them again, oldest first.
A receiver sees each event at least once, always with the same ``id``; the lease keeps two
workers from sending one row at the same time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from bot.config import RetryPolicy
from bot.domain.stream import AuditSink, AuditStream, PendingDelivery, SinkUnavailable
from bot.services.context import Context

log = logging.getLogger(__name__)

BATCH = 100
"""Rows one sink leases in one pass."""
TURN = timedelta(seconds=10)
"""A sink's turn ends after this (the rest of its batch is released for the next pass), so a
slow receiver never holds its lease long."""
LEASE = timedelta(minutes=2)
"""Longer than a turn and one more send: a lease never lapses while its worker sends."""
BACK_OFF = RetryPolicy(first_delay=timedelta(seconds=5), max_delay=timedelta(minutes=10))
KEEP_DELIVERED = timedelta(days=7)
"""Delivered rows are deleted after this, and so are the rows owed to a sink removed from the
configuration that have waited this long; the audit log itself keeps everything."""
BEHIND_AFTER = timedelta(minutes=2)
"""A sink whose oldest undelivered event is older than this is named in ``/readyz``."""


def deliver(ctx: Context) -> int:
    """One pass over every sink; how many events were delivered."""
    stream = ctx.stream
    if stream is None:
        return 0
    stream.outbox.forget(ctx.clock() - KEEP_DELIVERED, [sink.name for sink in stream.sinks])
    if not stream.sinks:
        return 0
    if len(stream.sinks) == 1:
        return _deliver_to(ctx, stream, stream.sinks[0])
    with ThreadPoolExecutor(len(stream.sinks), thread_name_prefix="audit-sink") as pool:
        return sum(pool.map(lambda sink: _deliver_to(ctx, stream, sink), stream.sinks))


def _deliver_to(ctx: Context, stream: AuditStream, sink: AuditSink) -> int:
    now = ctx.clock()
    batch = stream.outbox.claim(sink.name, ctx.worker_id, now, now + LEASE, BATCH)
    if not batch:
        return 0
    ends = time.monotonic() + TURN.total_seconds()
    sent: list[PendingDelivery] = []
    failure: tuple[PendingDelivery, SinkUnavailable] | None = None
    for pending in batch:
        if time.monotonic() > ends:
            break
        try:
            sink.send(pending.event)
        except Exception as error:
            failure = (pending, _unavailable(sink, error))
            break
        sent.append(pending)
    try:
        sink.flush()
    except Exception as error:
        failure, sent = (batch[0], _unavailable(sink, error)), []
    stream.outbox.delivered([p.id for p in sent], ctx.clock())
    if sent:
        stream.metrics.stream_delivered(sink.name, len(sent))
    if failure is not None:
        _back_off(ctx, stream, sink, failure[0], failure[1])
    stream.outbox.release(_rest(batch, sent), ctx.worker_id)
    return len(sent)


def _unavailable(sink: AuditSink, error: Exception) -> SinkUnavailable:
    """What a sink raised, as a failure to take the event: one it explains (a receiver down),
    or its own fault, logged with its traceback; either way the event waits and is offered
    again after the back-off, and the other sinks go on."""
    if isinstance(error, SinkUnavailable):
        return error
    log.error("audit sink %s failed unexpectedly", sink.name, exc_info=error)
    return SinkUnavailable(f"the sink failed unexpectedly ({type(error).__name__}); "
                           "see the log")


def _rest(batch: Sequence[PendingDelivery], sent: Sequence[PendingDelivery]) -> list[int]:
    done = {p.id for p in sent}
    return [p.id for p in batch if p.id not in done]


def _back_off(ctx: Context, stream: AuditStream, sink: AuditSink, pending: PendingDelivery,
              error: SinkUnavailable) -> None:
    failures = stream.outbox.failed(pending.id, error.message)
    retry_at = ctx.clock() + BACK_OFF.delay(failures)
    stream.outbox.postpone(pending.id, retry_at)
    stream.metrics.stream_failure(sink.name)
    log.warning("audit sink %s did not take event %s (%s failures in a row): %s; its events "
                "wait until %s", sink.name, pending.event.id, failures, error.message,
                retry_at.isoformat(timespec="seconds"))


def lag(ctx: Context) -> dict[str, tuple[int, float]]:
    """Per configured sink: how many events wait, and the age in seconds of the oldest (0 when
    none waits)."""
    stream = ctx.stream
    if stream is None or not stream.sinks:
        return {}
    now = ctx.clock()
    backlog = stream.outbox.backlog([sink.name for sink in stream.sinks])
    return {name: (entry.waiting, entry.lag(now).total_seconds())
            for name, entry in backlog.items()}


def behind(ctx: Context, after: timedelta = BEHIND_AFTER) -> dict[str, str]:
    """The sinks whose oldest undelivered event is older than ``after``, each with a line for
    ``/readyz``: how many wait, since when, the last error."""
    stream = ctx.stream
    if stream is None or not stream.sinks:
        return {}
    now = ctx.clock()
    found: dict[str, str] = {}
    for name, entry in stream.outbox.backlog([sink.name for sink in stream.sinks]).items():
        late = entry.lag(now)
        if late <= after or entry.oldest_at is None:
            continue
        error = f"; last error: {entry.last_error}" if entry.last_error else ""
        found[f"audit_sink {name}"] = (
            f"{entry.waiting} audit events not delivered, the oldest "
            f"{int(late.total_seconds())}s old (since {entry.oldest_at.isoformat()}), "
            f"{entry.attempts} failed attempts in a row{error}")
    return found
