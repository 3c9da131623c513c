"""The ``k8s-access-bot`` command: database, config, grants, audit and jobs from a shell.

Every command reads the settings and the config once and calls the same use cases as Slack.
Errors print one clear line (or one per field for a bad config) and exit non-zero.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from bot.adapters.db import migrate
from bot.adapters.db.store import make_engine
from bot.config import Config, ConfigError, Settings, load_config
from bot.domain.durations import format_duration
from bot.domain.errors import DomainError
from bot.domain.model import Actor, Kind, State
from bot.domain.ports import Granter
from bot.services import audit as audit_service
from bot.services import grants as grant_service
from bot.services import reminders
from bot.services import requests as request_service
from bot.services.context import Context

F = TypeVar("F", bound=Callable[..., Any])


def _explained(function: F) -> F:
    """Turn the errors people cause into a message and an exit code, never a traceback."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ConfigError as error:
            click.echo(f"configuration error:\n{error}", err=True)
            sys.exit(2)
        except DomainError as error:
            click.echo(f"error: {error.message}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                           for e in error.errors())
        raise ConfigError(f"environment: {fields}") from None
    from bot.logs import configure

    configure(settings.log_level, settings.log_format, settings.secret_values())
    return settings


def _config(settings: Settings) -> Config:
    return load_config(settings.k8s_access_config)


def _context(*, backends: bool = True) -> Context:
    """The use-case context; without ``backends`` for commands that only read the database.

    With SLACK_BOT_TOKEN set, people hear of what the command did in Slack; without it (Slack
    down, say) the notices go to the log.
    """
    from bot.app import build_context, build_slack_context

    settings = _settings()
    config = _config(settings)
    granters: dict[str, Granter] | None = None if backends else {}
    if settings.slack_bot_token is not None and backends:
        return build_slack_context(settings, config, granters=granters)[0]
    return build_context(settings, config, granters=granters)


def _operator() -> Actor:
    """Whoever runs the CLI has the database: they act as an admin, recorded by login name."""
    return Actor(user_id=f"cli:{getpass.getuser()}", is_admin=True)


@click.group()
def main() -> None:
    """Time-boxed, personal, audited Kubernetes access through Slack."""


# --- db -----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@_explained
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    engine = make_engine(_settings().database_url)
    migrate.upgrade(engine, revision)
    click.echo(f"database at {migrate.current(engine)}")


@db.command("current")
@_explained
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    engine = make_engine(_settings().database_url)
    current, head = migrate.current(engine), migrate.head(engine)
    state = "at head" if current == head else f"behind head {head}: run `db upgrade`"
    click.echo(f"{current or 'empty (no migrations applied)'} ({state})")


# --- config -------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """The configuration file."""


@config.command("check")
@click.option("--connect", is_flag=True,
              help="Also reach Slack, GitLab and every cluster with the bot's credentials.")
@click.option("--send-test", "send_test", metavar="USER", default=None,
              help="Also post a test message to each approvers channel and DM USER (a Slack "
                   "user ID, U…); implies --connect.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=120), default=5.0,
              show_default=True, help="Seconds to wait for each answer with --connect.")
@_explained
def config_check(connect: bool, send_test: str | None, timeout: float) -> None:
    """Validate the file (K8S_ACCESS_CONFIG) and the environment."""
    settings = _settings()
    loaded = _config(settings)
    for name, cluster in loaded.clusters.items():
        roles = ", ".join(loaded.clusters[name].roles)
        click.echo(f"cluster {name}: backend {cluster.backend}; roles {roles}")
    if connect or send_test is not None:
        from bot.checks import ConsoleReporter
        from bot.checks import connect as reach

        reporter = ConsoleReporter(click.echo, timeout)
        if reporter.summary(reach(settings, loaded, reporter, timeout=timeout,
                                  send_test_to=send_test)):
            sys.exit(1)
    click.echo(f"{loaded.source}: ok")


# --- grants -------------------------------------------------------------------------------


@main.group()
def grants() -> None:
    """Grants, for operators (works while Slack is down)."""


@grants.command("list")
@click.option("--active", is_flag=True, help="Only grants in effect now.")
@click.option("--limit", default=100, show_default=True)
@_explained
def grants_list(active: bool, limit: int) -> None:
    ctx = _context(backends=False)
    with ctx.transaction() as store:
        found = store.find(states=[State.ACTIVE] if active else None, kind=Kind.ACCESS,
                           limit=limit)
    now = ctx.clock()
    click.echo(f"{'ID':>6}  {'STATE':<10} {'TARGET':<40} {'SUBJECT':<30} {'REQUESTER':<12} LEFT")
    for request in found:
        left = request.time_left(now)
        shown = format_duration(left) if left and request.state is State.ACTIVE else "-"
        click.echo(
            f"{request.id:>6}  {request.state.value:<10} {request.target:<40.40} "
            f"{request.subject:<30.30} {request.requester_id:<12} {shown}"
        )


@grants.command("revoke")
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="Why, for the audit log and the grantee.")
@_explained
def grants_revoke(request_id: int, reason: str) -> None:
    """Revoke grant REQUEST_ID now, as an operator."""
    ctx = _context()
    request = grant_service.revoke_as(ctx, request_id, _operator(), reason)
    if request.state is State.REVOKED:
        undone = ctx.granter(request.cluster).describe(
            grant_service.spec_for(request, request.ended_at or ctx.clock()), request.backend_ref)
        click.echo(f"request #{request_id} revoked ({undone})")
    else:
        click.echo(f"request #{request_id}: revocation owed, the backend failed "
                   f"({request.last_error}); `jobs run retry` or the running bot will retry")
        sys.exit(1)


@grants.command("reconcile")
@click.option("--fix", is_flag=True, help="Remove what no grant explains.")
@_explained
def grants_reconcile(fix: bool) -> None:
    """Find bindings labelled as the bot's that no active grant explains."""
    strays = grant_service.reconcile(_context(), fix=fix)
    for stray in strays:
        state = "removed" if stray.removed else "found"
        click.echo(f"{state}: {stray.cluster} {stray.grant.describe()} "
                   f"(User {stray.grant.subject}): {stray.why}")
    click.echo(f"{len(strays)} stray{'s' if len(strays) != 1 else ''}"
               + ("" if fix or not strays else "; run with --fix to remove them"))


# --- audit --------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("export")
@click.option("--since", default=None, help="A date, an ISO timestamp, or a duration ago (7d).")
@click.option("--format", "fmt", type=click.Choice(audit_service.FORMATS), default="jsonl",
              show_default=True)
@_explained
def audit_export(since: str | None, fmt: str) -> None:
    """Write the audit log to standard output."""
    for chunk in audit_service.export(_context(backends=False), since=since, fmt=fmt):
        click.echo(chunk, nl=False)


# --- jobs ---------------------------------------------------------------------------------

def _expire(ctx: Context) -> int:
    return grant_service.expire_due(ctx) + grant_service.reconcile_and_fix(ctx)


_JOBS: dict[str, Callable[[Context], int]] = {
    "expire": _expire,
    "remind": reminders.remind,
    "retry": grant_service.run_due,
    "timeout": request_service.time_out_pending,
}


@main.group()
def jobs() -> None:
    """One pass of a periodic job (for a Kubernetes CronJob)."""


@jobs.command("run")
@click.argument("job", type=click.Choice(sorted(_JOBS)))
@_explained
def jobs_run(job: str) -> None:
    from bot.jobs import run_job

    count = run_job(_context(), job, _JOBS[job])
    if count is None:
        click.echo(f"{job}: failed; see the log", err=True)
        sys.exit(1)
    click.echo(f"{job}: {count} handled")


# --- serve --------------------------------------------------------------------------------


@main.command()
@click.option("--socket-mode", "socket_mode", is_flag=True,
              help="Connect out to Slack (needs SLACK_APP_TOKEN); no public URL needed.")
@click.option("--http", "http", is_flag=True,
              help="Receive Slack's requests at POST /slack/events (needs SLACK_SIGNING_SECRET).")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=3000, show_default=True, type=int)
@click.option("--jobs/--no-jobs", default=True, show_default=True,
              help="Run the periodic jobs in this process (off when CronJobs run them).")
@_explained
def serve(socket_mode: bool, http: bool, host: str, port: int, jobs: bool) -> None:
    """Run the bot, its scheduler and the /healthz, /readyz and /metrics endpoints.

    Without a flag: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode.
    """
    _count_across_processes()
    from bot.serve import run

    settings = _settings()
    if socket_mode and http:
        raise ConfigError("choose one of --socket-mode and --http")
    if not socket_mode and not http:
        socket_mode = settings.slack_app_token is not None
    run(settings, _config(settings), socket_mode=socket_mode, host=host, port=port,
        jobs=jobs)


@main.command()
@click.option("--jobs/--no-jobs", default=True, show_default=True,
              help="Run the periodic jobs in this process (off when CronJobs run them).")
@click.option("--wake-on-stdin", is_flag=True, hidden=True,
              help="Started by serve: each byte on stdin means work; end of input means stop.")
@_explained
def work(jobs: bool, wake_on_stdin: bool) -> None:
    """Do the work of the Slack requests that serve acknowledged, and run the periodic jobs.

    serve starts one itself; run more (on other machines, say) to share the work.
    """
    from bot.serve import work as run_worker

    settings = _settings()
    run_worker(settings, _config(settings), jobs=jobs, wake_on_stdin=wake_on_stdin)


def _count_across_processes() -> None:
    """serve and its worker count metrics into files that /metrics adds up. prometheus_client
    reads the variable when it is first imported, so it is set before anything imports it."""
    import os
    import tempfile
    from pathlib import Path

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder is None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="k8s-access-metrics-")
        return
    for stale in Path(folder).glob("*.db"):  # a previous run's counts
        stale.unlink()


@main.command()
@_explained
def demo() -> None:
    """Watch the whole flow locally: no Slack workspace, GitLab or cluster needed."""
    from bot.demo import run

    run()


if __name__ == "__main__":
    main()
