"""``k8s-access-bot serve``: the Slack app, the scheduler and the probes in one process."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from sqlalchemy import text
from waitress.server import create_server

from bot.adapters.db import migrate
from bot.adapters.db.store import make_engine
from bot.adapters.metrics import PrometheusMetrics
from bot.adapters.slack.listeners import forget_old_signatures
from bot.adapters.web import WebApp
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, ConfigError, Settings
from bot.jobs import Job, Scheduler, default_jobs

log = logging.getLogger(__name__)


def readiness(runtime: SlackRuntime, slack_ttl: float = 60) -> Callable[[], dict[str, str]]:
    """Database reachable, migrations at head, Slack accepting the token (cached a minute)."""
    last: dict[str, Any] = {"at": 0.0, "error": None}

    def check() -> dict[str, str]:
        failed: dict[str, str] = {}
        try:
            with runtime.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = migrate.current(runtime.engine), migrate.head(runtime.engine)
            if current != head:
                failed["migrations"] = f"database at {current}, code at {head}: run db upgrade"
        except Exception as error:
            failed["database"] = f"{type(error).__name__}: {error}".splitlines()[0]
        if time.monotonic() - last["at"] > slack_ttl:
            try:
                runtime.client.auth_test()
                last["error"] = None
            except SlackApiError as error:
                last["error"] = str(error.response.get("error"))
            except Exception as error:
                last["error"] = f"{type(error).__name__}: {error}"
            last["at"] = time.monotonic()
        if last["error"]:
            failed["slack"] = last["error"]
        return failed

    return check


def run(settings: Settings, config: Config, *, socket_mode: bool, host: str, port: int,
        jobs: bool = True) -> None:
    if socket_mode and settings.slack_app_token is None:
        raise ConfigError(
            "SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token (xapp-…) with the "
            "connections:write scope, from your Slack app's Basic Information page. Or run "
            "`serve --http` with SLACK_SIGNING_SECRET."
        )
    engine = make_engine(settings.database_url)
    metrics = PrometheusMetrics(engine)
    runtime = build_slack_runtime(settings, config, http=not socket_mode, engine=engine,
                                  metrics=metrics)
    passes = [Job("forget-signatures", forget_old_signatures,
                  config.file.schedules.expiry_sweep * 5)]
    if jobs:
        passes += default_jobs(runtime.ctx)
    scheduler = Scheduler(runtime.ctx, passes)
    scheduler.start()
    web = WebApp(None if socket_mode else runtime.app, readiness(runtime), metrics.render)
    server = create_server(web, host=host, port=port, threads=8,
                                    ident="k8s-access-bot")
    handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        assert settings.slack_app_token is not None
        handler = SocketModeHandler(runtime.app, settings.slack_app_token.get_secret_value(),
                                    web_client=runtime.client)
        handler.connect()  # type: ignore[no-untyped-call]
    def stop(signum: int, _frame: Any) -> None:
        raise _Stop(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving %s on %s:%s", "Socket Mode" if socket_mode else "HTTP", host, port)
    try:
        server.run()
    except _Stop as signum:
        log.info("stopping on signal %s", signum)
    finally:
        server.close()
        scheduler.stop()
        if handler is not None:
            handler.close()  # type: ignore[no-untyped-call]
    log.info("stopped")


class _Stop(Exception):
    """SIGTERM or SIGINT: leave the serving loop and shut down in order."""
