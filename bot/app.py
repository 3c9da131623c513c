"""The composition root: settings and config in, a :class:`Context` with real adapters out.

This is the one place that knows which technology implements which port.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.adapters.db.engine import make_engine
from bot.adapters.db.unit_of_work import SqlAlchemyUnitOfWork, unit_of_work_factory
from bot.adapters.local import ConfigDirectory, LogNotifier
from bot.config import Config, ConfigProblems, Problem, Settings
from bot.domain import reasons
from bot.domain.errors import DomainError
from bot.domain.oncall import OnCall
from bot.domain.ports import Directory, Granter, Metrics, Notifier
from bot.domain.stream import AuditStream, NullStreamMetrics, StreamMetrics
from bot.services.context import Context, NullMetrics

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from slack_bolt import App
    from slack_sdk import WebClient

    from bot.adapters.metrics import PrometheusMetrics
    from bot.adapters.slack.inbox import SlackInbox
    from bot.adapters.slack.worker import SlackWorker

GranterFactory = Callable[[Settings, Config, str], Granter]


def _kubernetes(kind: str) -> GranterFactory:
    def build(settings: Settings, config: Config, cluster: str) -> Granter:
        from bot.adapters.kubernetes.api import KubernetesApi
        from bot.adapters.kubernetes.granters import (
            KubernetesCertificateGranter,
            KubernetesRbacGranter,
        )

        kubernetes = config.cluster(cluster).kubernetes
        assert kubernetes is not None
        api = KubernetesApi.from_config(cluster, kubernetes)
        granter = KubernetesCertificateGranter if kind == "certificate" else KubernetesRbacGranter
        return granter(config, cluster, api)

    return build


def _gitlab(settings: Settings, config: Config, cluster: str) -> Granter:
    from bot.adapters.gitlab import GitLabMembershipGranter

    token = settings.gitlab_token.get_secret_value() if settings.gitlab_token else None
    return GitLabMembershipGranter.connect(config, cluster, settings.gitlab_url, token)


def _backends() -> dict[str, GranterFactory]:
    """Backend name → factory; each imports its libraries only when a cluster uses it."""
    return {"certificate": _kubernetes("certificate"), "rbac": _kubernetes("rbac"),
            "gitlab": _gitlab}


def build_granters(settings: Settings, config: Config) -> dict[str, Granter]:
    """Each cluster's granter, built without reaching the backends (a kubeconfig is read, no
    request is sent). Raises :class:`ConfigProblems` naming every cluster that cannot have
    one."""
    factories = _backends()
    granters: dict[str, Granter] = {}
    problems: list[Problem] = []
    for name, cluster in config.clusters.items():
        factory = factories.get(cluster.backend)
        if factory is None:
            problems.append(Problem(
                str(config.source), f"clusters.{name}.backend", cluster.backend,
                f"not available in this version (available: "
                f"{', '.join(sorted(factories)) or 'none'})"))
            continue
        try:
            granters[name] = factory(settings, config, name)
        except DomainError as error:
            problems.append(Problem(str(config.source), f"clusters.{name}", None,
                                    error.message))
    if problems:
        raise ConfigProblems(problems)
    return granters


def build_on_call(settings: Settings, config: Config) -> OnCall | None:
    """Who is on call, asked of PagerDuty and Opsgenie with the environment's credentials;
    None when no role has ``auto_approve_on_call``. A service a role names whose credentials
    are missing answers every question with doubt (``config check`` reports it)."""
    if not any(p.on_call is not None for p in config.policies.values()):
        return None
    from bot.adapters.oncall.opsgenie import OpsgenieOnCall
    from bot.adapters.oncall.pagerduty import PagerDutyOnCall
    from bot.adapters.oncall.service import OnCallServices

    token, key = settings.pagerduty_token, settings.opsgenie_api_key
    timeout = settings.on_call_timeout_seconds
    return OnCallServices(
        PagerDutyOnCall(token.get_secret_value(), settings.pagerduty_api_url, timeout=timeout)
        if token is not None else None,
        OpsgenieOnCall(key.get_secret_value(), settings.opsgenie_api_url, timeout=timeout)
        if key is not None else None)


def utc_now() -> datetime:
    return datetime.now(UTC)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class SlackRuntime:
    ctx: Context
    app: App
    """Faces Slack: keeps each request in the inbox and acknowledges it."""
    work_app: App
    """Does the work of the requests in the inbox (see :class:`SlackWorker`)."""
    inbox: SlackInbox
    client: WebClient
    engine: Engine

    def worker(self, threads: int | None = None) -> SlackWorker:
        """A worker for this runtime's inbox, woken whenever a request comes in; ``threads``
        (default: as many as the context's tuning says), polling as often as it says."""
        from bot.adapters.slack.worker import SlackWorker

        tuning = self.ctx.tuning
        worker = SlackWorker(self.work_app, self.inbox, self.ctx.worker_id,
                             threads or tuning.concurrency.slack_requests,
                             poll=tuning.slack.poll.total_seconds())
        self.inbox.notify(worker.wake)
        return worker


def slack_http(app: App) -> WSGIApplication:
    """Slack's events endpoint for :class:`bot.adapters.web.WebApp`: ``app`` behind its
    door check (:class:`bot.adapters.slack.app.SlackHttpHandler`)."""
    from bot.adapters.slack.app import SlackHttpHandler
    from bot.adapters.web import SLACK_PATH

    return SlackHttpHandler(app, path=SLACK_PATH)


def build_metrics(engine: Engine) -> PrometheusMetrics:
    """Prometheus metrics whose ``k8s_access_requests`` counts ``engine``'s requests at each
    scrape (imported here: ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` first)."""
    from bot.adapters.db.access_requests import count_by_state
    from bot.adapters.metrics import PrometheusMetrics

    return PrometheusMetrics(lambda: count_by_state(engine))


def build_slack_context(settings: Settings, config: Config, *, engine: Engine | None = None,
                        granters: Mapping[str, Granter] | None = None,
                        clock: Callable[[], datetime] = utc_now,
                        metrics: PrometheusMetrics | None = None) -> tuple[Context, WebClient]:
    """The use-case context with Slack as notifier and directory (jobs and ``serve``)."""
    from bot.adapters.slack.client import make_client
    from bot.adapters.slack.directory import SlackDirectory
    from bot.adapters.slack.notifier import SlackNotifier

    client = make_client(settings, on_error=metrics.slack_error if metrics else None)
    engine = engine if engine is not None else make_engine(settings.database_url)
    directory = SlackDirectory(client)
    notifier = SlackNotifier(client, clock, metrics, reasons.linker(config.policies))
    ctx = build_context(settings, config, engine=engine, granters=granters, notifier=notifier,
                        directory=directory, clock=clock, metrics=metrics)
    return ctx, client


def build_slack_runtime(settings: Settings, config: Config, *, http: bool,
                        engine: Engine | None = None,
                        granters: Mapping[str, Granter] | None = None,
                        clock: Callable[[], datetime] = utc_now,
                        metrics: PrometheusMetrics | None = None) -> SlackRuntime:
    """Everything ``serve`` runs: the Slack context, the inbox and the Bolt apps on top."""
    from bot.adapters.db.inbox import SqlAlchemyInbox
    from bot.adapters.slack.app import build_bolt_app, build_work_app
    from bot.adapters.slack.inbox import REPLAY_WINDOW

    engine = engine if engine is not None else make_engine(settings.database_url)
    ctx, client = build_slack_context(settings, config, engine=engine, granters=granters,
                                      clock=clock, metrics=metrics)
    inbox = SqlAlchemyInbox(engine, clock, lease=settings.tuning.slack.inbox_lease,
                            keep_done=REPLAY_WINDOW)
    app = build_bolt_app(settings, ctx, client, inbox, http=http)
    return SlackRuntime(ctx=ctx, app=app, work_app=build_work_app(ctx, client), inbox=inbox,
                        client=client, engine=engine)


def build_context(
    settings: Settings,
    config: Config,
    *,
    engine: Engine | None = None,
    granters: Mapping[str, Granter] | None = None,
    notifier: Notifier | None = None,
    directory: Directory | None = None,
    clock: Callable[[], datetime] = utc_now,
    metrics: Metrics | None = None,
) -> Context:
    engine = engine if engine is not None else make_engine(settings.database_url)
    sessions = unit_of_work_factory(engine)
    stream = build_audit_stream(config, engine, sessions, metrics)
    return Context(
        config=config,
        unit_of_work=lambda: SqlAlchemyUnitOfWork(sessions),
        granters=granters if granters is not None else build_granters(settings, config),
        notifier=notifier if notifier is not None else LogNotifier(),
        directory=directory if directory is not None else ConfigDirectory(config),
        clock=clock,
        worker_id=worker_id(),
        retry=settings.retry,
        tuning=settings.tuning,
        metrics=metrics if metrics is not None else NullMetrics(),
        on_call=build_on_call(settings, config),
        stream=stream,
    )


def build_audit_stream(config: Config, engine: Engine, sessions: sessionmaker[Session],
                       metrics: object = None) -> AuditStream:
    """The configured audit sinks and their outbox; every session of ``sessions`` then owes
    each audit event it records to each sink. With no sink configured the stream has none,
    and its outbox is there to forget what sinks removed since were owed."""
    from bot.adapters.audit_sinks import build_sinks
    from bot.adapters.db.outbox import SqlAlchemyAuditOutbox, route_to_sinks

    sinks = build_sinks(config)
    route_to_sinks(sessions, [sink.name for sink in sinks])
    return AuditStream(SqlAlchemyAuditOutbox(engine), sinks,
                       metrics if isinstance(metrics, StreamMetrics) else NullStreamMetrics())
