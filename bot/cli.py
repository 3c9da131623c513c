"""The ``k8s-access-bot`` command: database, config, grants, audit and jobs from a shell.

Every command reads the settings and the config once and calls the same use cases as Slack.
Errors print one clear line (or one per field for a bad config) and exit non-zero.
"""

from __future__ import annotations

import gc
import getpass
import re
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.adapters.db import migrate
from bot.adapters.db.connection import explain, not_at_head, open_database
from bot.adapters.slack.commands import MAX_REQUEST_ID
from bot.config import (
    Config,
    ConfigError,
    ConfigProblems,
    Settings,
    check,
    load_settings,
    slack_mode,
)
from bot.domain.durations import format_duration
from bot.domain.errors import DomainError
from bot.domain.model import Actor, Kind, State
from bot.jobs import JOBS
from bot.services import audit as audit_service
from bot.services import grants as grant_service
from bot.services import operations as operation_service
from bot.services.context import Context

F = TypeVar("F", bound=Callable[..., Any])


def _explained(function: F) -> F:
    """Turn the errors people cause into a message and an exit code, never a traceback:
    2 for what the configuration, the environment or the database need changed, 1 for a
    refused action."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ConfigProblems as error:
            count = len(error.problems)
            click.echo(f"configuration: {count} problem{'s' if count != 1 else ''}:", err=True)
            for problem in error.problems:
                click.echo(f"  {problem}", err=True)
            sys.exit(2)
        except ConfigError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except SQLAlchemyError as error:
            click.echo(f"error: {explain(error, _database_url())}", err=True)
            sys.exit(2)
        except DomainError as error:
            click.echo(f"error: {error.message}", err=True)
            sys.exit(1)
        finally:
            while _opened:  # the command is over: its connections too
                _opened.pop().dispose()

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    settings = load_settings()
    from bot.logs import configure

    configure(settings.log_level, settings.log_format, settings.secret_values())
    return settings


def _database_url() -> str:
    try:
        return Settings().database_url
    except ValidationError:
        return "(DATABASE_URL)"


_opened: list[Engine] = []


def _database(settings: Settings, *, migrated: bool = True, existing: bool = False) -> Engine:
    """The database, reachable (and ``migrated``, see :func:`open_database`), or one line
    saying why not; closed when the command ends."""
    engine = open_database(settings.database_url, migrated=migrated, existing=existing)
    _opened.append(engine)
    return engine


def _context(*, backends: bool = True) -> Context:
    """The use-case context; without ``backends`` for commands that only read the database
    (those need no config file).

    With SLACK_BOT_TOKEN set, people hear of what the command did in Slack; without it (Slack
    down, say) the notices go to the log.
    """
    from bot.app import build_context, build_slack_context

    settings = _settings()
    if not backends:
        engine = _database(settings)
        return build_context(settings, Config.without_file(settings.k8s_access_config),
                             engine=engine, granters={})
    config = check(settings, None)
    engine = _database(settings)
    if settings.slack_bot_token is not None:
        return build_slack_context(settings, config, engine=engine)[0]
    return build_context(settings, config, engine=engine)


def _operator() -> Actor:
    """Whoever runs the CLI has the database: they act as an admin, recorded by login name."""
    return Actor(user_id=f"cli:{getpass.getuser()}", is_admin=True)


class _OnceCommand(click.Command):
    """A command whose options that take one value are refused when given twice: which of
    the two was meant is not for the bot to guess (click would take the last)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        words = args[:args.index("--")] if "--" in args else args
        for param in self.params:
            if not isinstance(param, click.Option) or param.is_flag or param.multiple \
                    or param.count:
                continue
            names = set(param.opts)
            given = [w for w in words if w.partition("=")[0] in names]
            if len(given) > 1:
                raise click.UsageError(f"{param.opts[-1]} is given twice: give it once.", ctx)
        return super().parse_args(ctx, args)


class _OnceGroup(click.Group):
    command_class = _OnceCommand


_OnceGroup.group_class = _OnceGroup


@click.group(cls=_OnceGroup)
@click.version_option(package_name="k8s-access-bot", prog_name="k8s-access-bot",
                      message="%(prog)s %(version)s")
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
    engine = _database(_settings(), migrated=False)
    migrate.upgrade(engine, revision)
    click.echo(f"database at {migrate.current(engine)}")


@db.command("current")
@_explained
def db_current() -> None:
    """Show the database's revision; exit 1 unless it is the one this version needs.

    Creates nothing: a SQLite file that is not there is reported, not made.
    """
    settings = _settings()
    url = settings.database_url
    engine = _database(settings, migrated=False, existing=True)
    current, head = migrate.current(engine), migrate.head()
    if current == head:
        click.echo(f"{current} (at head)")
        return
    click.echo(f"{current or 'empty'}: {not_at_head(url, current, head)}")
    sys.exit(1)


# --- config -------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """The configuration file."""


@config.command("check")
@click.option("--connect", is_flag=True,
              help="Also reach Slack, GitLab, every cluster, and PagerDuty and Opsgenie "
                   "(the token or key, and each escalation policy and schedule the roles "
                   "name) with the bot's credentials.")
@click.option("--send-test", "send_test", metavar="USER", default=None,
              help="Also post a test message to each approvers channel and DM USER (a Slack "
                   "user ID, U…); implies --connect.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=120), default=5.0,
              show_default=True, help="Seconds to wait for each answer with --connect.")
@click.option("--socket-mode", "socket_mode", is_flag=True,
              help="Check for `serve --socket-mode` (default: as `serve` would choose).")
@click.option("--http", "http", is_flag=True, help="Check for `serve --http`.")
@_explained
def config_check(connect: bool, send_test: str | None, timeout: float, socket_mode: bool,
                 http: bool) -> None:
    """Validate the file (K8S_ACCESS_CONFIG) and the environment, as `serve` does, listing
    every problem with its file, field, value and fix; with --connect, also reach Slack, GitLab,
    every cluster, and the on-call services the roles name (PagerDuty, Opsgenie), only once the
    file and the environment passed."""
    from bot.app import build_granters

    if send_test is not None and not re.fullmatch(r"[UW][A-Z0-9]{2,}", send_test):
        raise ConfigError(f"--send-test {send_test!r} is not a Slack member ID: give one like "
                          "U0123ABCD (profile → ⋮ → Copy member ID); nothing was sent")
    settings = _settings()
    loaded = check(settings, slack_mode(settings, socket_mode=socket_mode, http=http))
    build_granters(settings, loaded)  # as serve does: each cluster's credentials load
    for name, cluster in loaded.clusters.items():
        roles = ", ".join(loaded.clusters[name].roles)
        click.echo(f"cluster {name}: backend {cluster.backend}; roles {roles}")
    click.echo(f"{loaded.source}: ok")
    if connect or send_test is not None:
        from bot.checks import ConsoleReporter
        from bot.checks import connect as reach

        reporter = ConsoleReporter(click.echo, timeout)
        if reporter.summary(reach(settings, loaded, reporter, timeout=timeout,
                                  send_test_to=send_test)):
            sys.exit(1)


# --- grants -------------------------------------------------------------------------------


@main.group()
def grants() -> None:
    """Grants, for operators (works while Slack is down)."""


@grants.command("list")
@click.option("--active", is_flag=True, help="Only grants in effect now.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, MAX_REQUEST_ID))
@_explained
def grants_list(active: bool, limit: int) -> None:
    ctx = _context(backends=False)
    with ctx.transaction() as uow:
        found = uow.requests.find(states=[State.ACTIVE] if active else None, kind=Kind.ACCESS,
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
@click.argument("request_id", type=click.IntRange(1, MAX_REQUEST_ID))
@click.option("--reason", required=True, help="Why, for the audit log and the grantee.")
@_explained
def grants_revoke(request_id: int, reason: str) -> None:
    """Revoke grant REQUEST_ID now, as an operator."""
    ctx = _context()
    request = grant_service.revoke_as(ctx, request_id, _operator(), reason)
    if request.state is State.REVOKED:
        undone = ctx.granter(request.cluster).describe(
            operation_service.spec_for(request, request.ended_at or ctx.clock()),
            request.backend_ref)
        click.echo(f"request #{request_id} revoked ({undone})")
    else:
        click.echo(f"request #{request_id}: revocation owed, the backend failed "
                   f"({request.last_error}); `jobs run retry` or the running bot will retry")
        sys.exit(1)


@grants.command("reconcile")
@click.option("--fix", is_flag=True, help="Remove what no grant explains.")
@_explained
def grants_reconcile(fix: bool) -> None:
    """Find what backends hold as the bot's that no live grant explains (never younger than
    five minutes, never another cluster's or installation's); --fix removes it."""
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
@click.option("--attestations", is_flag=True,
              help="Only the access reviews' attestations: one line per Keep, with the grant's "
                   "ID and who kept it.")
@_explained
def audit_export(since: str | None, fmt: str, attestations: bool) -> None:
    """Write the audit log to standard output."""
    for chunk in audit_service.export(_context(backends=False), since=since, fmt=fmt,
                                      attestations=attestations):
        click.echo(chunk, nl=False)


# --- jobs ---------------------------------------------------------------------------------

PASS_GC_THRESHOLD = 20_000
"""Allocations between two collections of the youngest objects during a job's pass."""


@main.group()
def jobs() -> None:
    """One pass of a periodic job (for a Kubernetes CronJob)."""


@jobs.command("run")
@click.argument("job", type=click.Choice(sorted(JOBS)), metavar="JOB")
@_explained
def jobs_run(job: str) -> None:
    """One pass of JOB: escalate, expire, reconcile, remind, retry, stream or timeout.

    Says how many it handled, the pass's seconds and the CPU seconds the process spent in it
    (its threads included; the start-up before it left out)."""
    from bot.jobs import run_job

    ctx = _context()
    # What the start-up made (modules, config, clients) lives as long as the process: the
    # collector need not walk it again each time the pass's own objects are collected.
    gc.freeze()
    # What a pass builds (a batch's grants, their notices) mostly lives until the pass ends:
    # collected every 700 allocations, as by default, it would be walked again and again.
    gc.set_threshold(PASS_GC_THRESHOLD, *gc.get_threshold()[1:])
    started, started_cpu = time.monotonic(), time.process_time()
    count = run_job(ctx, job, JOBS[job])
    seconds, cpu = time.monotonic() - started, time.process_time() - started_cpu
    if count is None:
        click.echo(f"{job}: failed; see the log", err=True)
        sys.exit(1)
    # A stdout sink's log shipper reads every line of standard output as an event.
    streams_to_stdout = any(sink.type == "stdout" for sink in ctx.config.file.audit_sinks)
    click.echo(f"{job}: {count} handled in {seconds:.3f} s (CPU {cpu:.3f} s)",
               err=streams_to_stdout)


# --- serve --------------------------------------------------------------------------------


@main.command()
@click.option("--socket-mode", "socket_mode", is_flag=True,
              help="Connect out to Slack (needs SLACK_APP_TOKEN); no public URL needed.")
@click.option("--http", "http", is_flag=True,
              help="Receive Slack's requests at POST /slack/events (needs SLACK_SIGNING_SECRET).")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=3000, show_default=True, type=click.IntRange(0, 65535),
              envvar="K8S_ACCESS_PORT")
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
    mode = slack_mode(settings, socket_mode=socket_mode, http=http)
    config = check(settings, mode)
    run(settings, config, socket_mode=mode == "socket", host=host, port=port, jobs=jobs)


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
    run_worker(settings, check(settings, None), jobs=jobs, wake_on_stdin=wake_on_stdin)


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
