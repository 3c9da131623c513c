"""The composition root: settings and config in, a :class:`Context` with real adapters out.

This is the one place that knows which technology implements which port.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from bot.adapters.db.store import SqlAlchemyUnitOfWork, make_engine, unit_of_work_factory
from bot.adapters.local import ConfigDirectory, LogNotifier
from bot.config import Config, ConfigProblems, Problem, Settings
from bot.domain.errors import DomainError
from bot.domain.ports import Directory, Granter, Metrics, Notifier
from bot.services.context import Context, NullMetrics, RetryPolicy

if TYPE_CHECKING:
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

    def worker(self, threads: int = 8) -> SlackWorker:
        """A worker for this runtime's inbox, woken whenever a request comes in."""
        from bot.adapters.slack.worker import SlackWorker

        worker = SlackWorker(self.work_app, self.inbox, self.ctx.worker_id, threads)
        self.inbox.notify(worker.wake)
        return worker


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
    notifier = SlackNotifier(client, clock, metrics)
    ctx = build_context(settings, config, engine=engine, granters=granters, notifier=notifier,
                        directory=directory, clock=clock, metrics=metrics)
    return ctx, client


def build_slack_runtime(settings: Settings, config: Config, *, http: bool,
                        engine: Engine | None = None,
                        granters: Mapping[str, Granter] | None = None,
                        clock: Callable[[], datetime] = utc_now,
                        metrics: PrometheusMetrics | None = None) -> SlackRuntime:
    """Everything ``serve`` runs: the Slack context, the inbox and the Bolt apps on top."""
    from bot.adapters.slack.app import build_bolt_app, build_work_app
    from bot.adapters.slack.inbox import SlackInbox

    engine = engine if engine is not None else make_engine(settings.database_url)
    ctx, client = build_slack_context(settings, config, engine=engine, granters=granters,
                                      clock=clock, metrics=metrics)
    inbox = SlackInbox(engine, clock)
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
    return Context(
        config=config,
        unit_of_work=lambda: SqlAlchemyUnitOfWork(sessions),
        granters=granters if granters is not None else build_granters(settings, config),
        notifier=notifier if notifier is not None else LogNotifier(),
        directory=directory if directory is not None else ConfigDirectory(config),
        clock=clock,
        worker_id=worker_id(),
        retry=RetryPolicy(lease=timedelta(seconds=settings.operation_lease_seconds),
                          heartbeat=timedelta(seconds=settings.operation_heartbeat_seconds),
                          slow_after=timedelta(seconds=settings.operation_slow_after_seconds)),
        metrics=metrics if metrics is not None else NullMetrics(),
    )
