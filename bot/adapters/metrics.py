"""Prometheus metrics for ``/metrics``: what the bot does, how fast its backends answer, how its
jobs keep up, how often Slack refuses; and the requests by state and cluster, counted in the
database at scrape time so that every replica reports the same truth.

``serve`` and its worker are two processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (``serve``
sets it before this module is imported), both count into files there and ``/metrics`` adds
them up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CountRequests = Callable[[], Iterable[tuple[str, str, int]] | None]
"""``(state, cluster, count)`` of the requests, or None when the database did not answer."""


class RequestsByState(Collector):
    def __init__(self, count: CountRequests) -> None:
        self._count = count

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("k8s_access_requests", "Access requests by state and cluster",
                                   labels=["state", "cluster"])
        up = GaugeMetricFamily("k8s_access_database_up",
                               "1 when the database answered this scrape's query, else 0")
        counts = self._count()
        for state, cluster, count in counts or ():
            family.add_metric([state, cluster], count)
        # /metrics answers whatever the database does; /readyz says why
        up.add_metric([], 0 if counts is None else 1)
        yield family
        yield up


class AuditStreamLag(Collector):
    """Each audit sink's backlog, read from the outbox at scrape time (every replica reports
    the same truth)."""

    def __init__(self, lag: Callable[[], Mapping[str, tuple[int, float]]]) -> None:
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        seconds = GaugeMetricFamily(
            "k8s_access_audit_stream_lag_seconds",
            "Age of the oldest audit event a sink has not received yet (0 when none waits)",
            labels=["sink"])
        waiting = GaugeMetricFamily("k8s_access_audit_stream_waiting",
                                    "Audit events a sink has not received yet", labels=["sink"])
        try:
            lag = self._lag()
        except Exception:  # the database is down: k8s_access_database_up and /readyz say so
            lag = {}
        for sink, (count, age) in sorted(lag.items()):
            seconds.add_metric([sink], age)
            waiting.add_metric([sink], count)
        yield seconds
        yield waiting


class PrometheusMetrics:
    def __init__(self, count_requests: CountRequests | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        """``count_requests``: what ``k8s_access_requests`` shows, asked at each scrape."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("k8s_access_events_total",
                              "Audited actions (requested, approved, activated, revoked, …)",
                              ["action", "cluster"], registry=r)
        self.backend_seconds = Histogram("k8s_access_backend_call_seconds",
                                         "Grant, extend and revoke calls to the backends",
                                         ["operation", "cluster", "outcome"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.backend_errors = Counter("k8s_access_backend_errors_total",
                                      "Failed backend calls by kind", ["operation", "cluster",
                                                                       "kind"], registry=r)
        self.job_runs = Counter("k8s_access_job_runs_total", "Job passes by outcome",
                                ["job", "outcome"], registry=r)
        self.job_seconds = Histogram("k8s_access_job_duration_seconds", "Job pass duration",
                                     ["job"], buckets=LATENCY_BUCKETS, registry=r)
        self.job_handled = Counter("k8s_access_job_handled_total", "Items handled by jobs",
                                   ["job"], registry=r)
        self.job_last_success = Gauge("k8s_access_job_last_success_timestamp_seconds",
                                      "When each job last ran without error", ["job"],
                                      multiprocess_mode="max", registry=r)
        self.expiry_lag_seconds = Histogram("k8s_access_expiry_lag_seconds",
                                            "From a grant's end to its revocation",
                                            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600),
                                            registry=r)
        self.slack_errors = Counter("k8s_access_slack_api_errors_total",
                                    "Slack Web API errors by method and error",
                                    ["method", "error"], registry=r)
        self.slack_undelivered = Counter(
            "k8s_access_slack_undelivered_total",
            "Messages that reached nobody, by purpose, Slack's error and kind (temporary: "
            "retried; recipient: cannot receive, skipped; invalid: refused, not retried)",
            ["purpose", "error", "kind"], registry=r)
        self.approvers_channel_ok = Gauge(
            "k8s_access_approvers_channel_ok",
            "1 when the bot can post to the approvers channel (it exists, is not archived and "
            "the bot is a member), 0 when not; checked at start",
            ["channel"], multiprocess_mode="mostrecent", registry=r)
        self.stream_deliveries = Counter("k8s_access_audit_stream_delivered_total",
                                         "Audit events delivered, by sink", ["sink"],
                                         registry=r)
        self.stream_failures = Counter(
            "k8s_access_audit_stream_failures_total",
            "Failed deliveries of audit events, by sink (each is retried with back-off)",
            ["sink"], registry=r)
        self.reviews_unreviewed = Gauge(
            "k8s_access_review_unreviewed",
            "Active grants the last weekly access review left undecided, carried into the "
            "next one, by cluster", ["cluster"], multiprocess_mode="mostrecent", registry=r)
        self._exposed = r
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed)  # type: ignore[no-untyped-call]
        if count_requests is not None:
            self._exposed.register(RequestsByState(count_requests))

    def event(self, action: str, cluster: str) -> None:
        self.events.labels(action, cluster).inc()

    def backend_call(self, operation: str, cluster: str, seconds: float, outcome: str) -> None:
        self.backend_seconds.labels(operation, cluster, outcome).observe(seconds)
        if outcome != "ok":
            self.backend_errors.labels(operation, cluster, outcome).inc()

    def job_run(self, job: str, seconds: float, handled: int, ok: bool) -> None:
        self.job_runs.labels(job, "ok" if ok else "error").inc()
        self.job_seconds.labels(job).observe(seconds)
        self.job_handled.labels(job).inc(handled)
        if ok:
            self.job_last_success.labels(job).set(time.time())

    def expiry_lag(self, seconds: float) -> None:
        self.expiry_lag_seconds.observe(max(seconds, 0))

    def undelivered(self, purpose: str, error: str, kind: str) -> None:
        self.slack_undelivered.labels(purpose, error, kind).inc()

    def review_unreviewed(self, cluster: str, count: int) -> None:
        self.reviews_unreviewed.labels(cluster).set(count)

    def slack_error(self, method: str, error: str) -> None:
        self.slack_errors.labels(method, error).inc()

    def approvers_channel(self, channel: str, ok: bool) -> None:
        self.approvers_channel_ok.labels(channel).set(1 if ok else 0)

    def stream_delivered(self, sink: str, count: int) -> None:
        self.stream_deliveries.labels(sink).inc(count)

    def stream_failure(self, sink: str) -> None:
        self.stream_failures.labels(sink).inc()

    def watch_audit_stream(self, lag: Callable[[], Mapping[str, tuple[int, float]]]) -> None:
        """Expose each sink's backlog (``lag``: sink → waiting events, age in seconds of the
        oldest) at every scrape."""
        self._exposed.register(AuditStreamLag(lag))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST
