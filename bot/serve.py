"""``k8s-access-bot serve`` and ``k8s-access-bot work``: two processes, one deployment.

``serve`` faces Slack and answers the probes; it only keeps each request in the inbox and
acknowledges it, so that acknowledgements never wait for work. It starts ``work`` as its child
and restarts it if it dies: the worker does what the requests ask and runs the scheduled jobs.
The inbox is in the database, so a request survives a crash of either, and several replicas
share the work.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from sqlalchemy import text
from waitress.server import create_server

from bot.adapters.db import migrate
from bot.adapters.db.connection import open_database
from bot.adapters.metrics import PrometheusMetrics
from bot.adapters.web import WebApp
from bot.app import SlackRuntime, build_metrics, build_slack_runtime, slack_http
from bot.checks.slack import ApproversChannelWatch
from bot.config import Config, ConfigError, Settings
from bot.jobs import Job, Scheduler, default_jobs
from bot.services import audit_stream
from bot.services.context import Context

log = logging.getLogger(__name__)


class WorkerProcess:
    """``k8s-access-bot work`` as a child: woken through its stdin, restarted when it dies."""

    def __init__(self, jobs: bool) -> None:
        self._args = [sys.executable, "-m", "bot.cli", "work", "--wake-on-stdin",
                      "--jobs" if jobs else "--no-jobs"]
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._monitor.start()

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wake(self) -> None:
        process = self._process
        if process is None or process.stdin is None:
            return
        # Failing means it is already awake with bytes to read, or restarting: it polls anyway.
        with contextlib.suppress(OSError, ValueError):
            os.write(process.stdin.fileno(), b".")

    def stop(self, timeout: float = 40) -> None:
        """Let the worker finish what it is doing, then kill it if it takes too long."""
        self._stopping.set()
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the worker did not stop in %ss; killing it", timeout)
            process.kill()
            process.wait()

    def _spawn(self) -> None:
        self._process = subprocess.Popen(self._args, stdin=subprocess.PIPE)
        assert self._process.stdin is not None
        os.set_blocking(self._process.stdin.fileno(), False)

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30)
            log.error("the worker process exited with %s; starting another in %.0fs", code,
                      backoff)
            if self._stopping.wait(backoff):
                return
            self._spawn()


class Workers:
    """``serve``'s worker processes: each woken for every request (the first to claim it does
    it; the others find nothing), each restarted on its own. Only the first runs the jobs."""

    def __init__(self, count: int, jobs: bool) -> None:
        self._processes = [WorkerProcess(jobs and n == 0) for n in range(count)]

    def start(self) -> None:
        for process in self._processes:
            process.start()

    def alive(self) -> bool:
        return all(process.alive() for process in self._processes)

    def wake(self) -> None:
        for process in self._processes:
            process.wake()

    def stop(self, timeout: float = 40) -> None:
        """Ask every worker to finish at once, then wait for each."""
        stopping = [threading.Thread(target=process.stop, args=(timeout,))
                    for process in self._processes]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


def worker_processes(settings: Settings, dialect: str) -> int:
    """``WORKER_PROCESSES`` on PostgreSQL; one on SQLite, which lets one process write at a
    time."""
    return settings.tuning.concurrency.worker_processes if dialect == "postgresql" else 1


def readiness(runtime: SlackRuntime, worker: Workers | WorkerProcess | None = None,
              slack_ttl: float = 60) -> Callable[[], dict[str, str]]:
    """Database reachable, migrations at head, the worker running, Slack accepting the token
    (cached a minute)."""
    last: dict[str, Any] = {"at": 0.0, "error": None}

    def check() -> dict[str, str]:
        failed: dict[str, str] = {}
        if worker is not None and not worker.alive():
            failed["worker"] = "a worker process is not running; it is being restarted"
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


def stream_warnings(ctx: Context) -> dict[str, str]:
    """The audit sinks that are behind, for ``/readyz``'s warnings."""
    try:
        return audit_stream.behind(ctx)
    except Exception:  # the database is down: the readiness check itself says so
        return {}


def run(settings: Settings, config: Config, *, socket_mode: bool, host: str, port: int,
        jobs: bool = True) -> None:
    """Serve until SIGTERM. ``settings`` and ``config`` have passed :func:`bot.config.check`
    for this mode. Raises :class:`ConfigError` (one line) when the database is unreachable or
    not migrated, or Slack refuses a token."""
    engine = open_database(settings.database_url)
    metrics = build_metrics(engine)
    runtime = build_slack_runtime(settings, config, http=not socket_mode, engine=engine,
                                  metrics=metrics)
    settle_heap()
    worker = Workers(worker_processes(settings, engine.dialect.name), jobs)
    channels = ApproversChannelWatch(runtime.client, config, metrics.approvers_channel)
    metrics.watch_audit_stream(lambda: audit_stream.lag(runtime.ctx))
    web = WebApp(None if socket_mode else slack_http(runtime.app), readiness(runtime, worker),
                 metrics.render,
                 warnings=lambda: {**channels.problems(), **stream_warnings(runtime.ctx)})
    try:
        server = create_server(web, host=host, port=port,
                               threads=settings.tuning.concurrency.web_requests,
                               ident="k8s-access-bot")
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror or error}): is "
                          "another serve running? Stop it, or choose another --port") from None
    handler = None
    if socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        assert settings.slack_app_token is not None
        handler = SocketModeHandler(runtime.app, settings.slack_app_token.get_secret_value(),
                                    web_client=runtime.client)
        refusal = _FirstRefusal()
        handler.client.logger.addFilter(refusal)
        try:
            handler.connect()  # type: ignore[no-untyped-call]
        except SlackApiError as error:
            server.close()
            raise ConfigError(socket_mode_refused(str(error.response.get("error")))) from None
        finally:
            handler.client.logger.removeFilter(refusal)
    runtime.inbox.notify(worker.wake)
    worker.start()
    channels.start()

    def stop(signum: int, _frame: Any) -> None:
        raise _Stop(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving %s on %s:%s", "Socket Mode" if socket_mode else "HTTP", host, port)
    try:
        server.run()  # returns when the signal arrives inside waitress's loop
    except _Stop:
        pass  # it arrived elsewhere in this thread
    finally:
        log.info("stopping")
        server.close()
        if handler is not None:
            handler.close()  # type: ignore[no-untyped-call]
        worker.stop()
        runtime.inbox.close()
    log.info("stopped")


class _FirstRefusal(logging.Filter):
    """The Socket Mode client logs Slack's refusal before raising it; at start the refusal
    becomes one line of our own (:func:`socket_mode_refused`), so its log line is left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to retrieve WSS URL")


def socket_mode_refused(error: str) -> str:
    """The line for Slack refusing ``apps.connections.open`` with ``error``."""
    if error in ("invalid_auth", "not_authed", "account_inactive", "token_revoked",
                 "not_allowed_token_type"):
        return (f"Slack refused SLACK_APP_TOKEN ({error}): create an app-level token (xapp-…) "
                "with the connections:write scope on your Slack app's Basic Information page, "
                "or run `serve --http` with SLACK_SIGNING_SECRET")
    if error == "socket_mode_not_enabled":
        return ("Socket Mode is off for this Slack app (socket_mode_not_enabled): turn it on "
                "under Settings → Socket Mode, or run `serve --http` with SLACK_SIGNING_SECRET")
    return f"Slack refused to open a Socket Mode connection ({error})"


def work(settings: Settings, config: Config, *, jobs: bool, wake_on_stdin: bool) -> None:
    """The worker: the inbox's requests and the scheduled jobs, until SIGTERM (or, started by
    ``serve``, until its stdin closes)."""
    engine = open_database(settings.database_url)
    runtime = build_slack_runtime(settings, config, http=False, engine=engine,
                                  metrics=PrometheusMetrics())
    settle_heap()
    worker = runtime.worker()
    passes = [Job("forget-signatures", lambda _: runtime.inbox.forget(),
                  config.schedules.inbox_forget_every)]
    if jobs:
        passes += default_jobs(runtime.ctx)
    scheduler = Scheduler(runtime.ctx, passes)
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if wake_on_stdin:
        yield_to_serve()
        threading.Thread(target=_wake_on_input, args=(worker.wake, stopping), daemon=True,
                         name="wake-on-stdin").start()
    worker.start()
    scheduler.start()
    log.info("working")
    while not stopping.wait(1):
        pass
    log.info("stopping the worker")
    scheduler.stop()
    worker.stop()
    runtime.inbox.close()
    log.info("stopped")


WORKER_NICENESS = 10
"""How much nicer than ``serve`` its workers are. Measured beside Linux's idle scheduling class
(``python -m bench``, the two taking turns): the acknowledgements and forms kept their ratios
to a bare Bolt app with either, and a kubeconfig reached its DM about 25% sooner at p99 with
this, the idle class leaving the worker only what every other process on the node left."""


def yield_to_serve() -> None:
    """Next to ``serve``, acknowledgements come first: Slack's 3 seconds are a hard limit, the
    answers after them are not. The worker runs at a lower priority (a higher niceness) than
    serve, which the kernel's scheduler favours by about 10× in CPU time while both want it.
    Threads started later inherit it."""
    os.nice(WORKER_NICENESS)


def settle_heap() -> None:
    """Keep the full garbage collections short.

    Python's oldest generation holds everything imported and built at start (the Slack, GitLab
    and Kubernetes clients: most of the heap). A full collection walks all of it, tens of
    milliseconds that every request in flight waits for. Frozen objects are never walked; what
    requests allocate is collected as before.
    """
    gc.collect()
    gc.freeze()


def _wake_on_input(wake: Callable[[], None], stopping: threading.Event) -> None:
    """Each byte ``serve`` writes means a request came in; end of input means it is gone."""
    while os.read(sys.stdin.fileno(), 4096):
        wake()
    stopping.set()


class _Stop(SystemExit):
    """SIGTERM or SIGINT: leave the serving loop and shut down in order. A ``SystemExit``, so
    that waitress's connection handlers let it through wherever it arrives, and its loop ends."""
