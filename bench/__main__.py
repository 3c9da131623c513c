"""Benchmarks: ``python -m bench`` (PostgreSQL, a few minutes on two cores).

Every number is set beside a baseline measured in the same run, and reported as a ratio:
the bot's acknowledgements beside a bare slack-bolt app that only acknowledges; queries and
the expiry sweep at 10⁶ rows beside the same work at 10⁴; the reminder run beside the floor that
Slack's rate limits set. Nothing here is a test: there are no thresholds, only a table.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from slack_bolt import App
from slack_bolt.request import BoltRequest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from bench.bare_app import bare_app
from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.adapters.slack.home import Home
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings, parse_config
from bot.domain.errors import PolicyViolation
from bot.domain.ports import Delivery, GrantResult, GrantSpec, UserInfo
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers
from bot.services import access, grants, reminders

ME, APPROVER = "U0BENCHME", "U0APPROVER"
CLUSTERS = ["staging", "prod", "dev", "qa"]
ROWS: list[tuple[str, str, str, str]] = []


def row(section: str, measure: str, value: str, ratio: str) -> None:
    ROWS.append((section, measure, value, ratio))
    print(f"  {section:<18} {measure:<46} {value:>16} {ratio:>12}", flush=True)


# --- setting up -------------------------------------------------------------------------


class QuickGranter:
    """A backend that answers at once: the benchmarks measure the bot, not a cluster."""

    def resolve_subject(self, user: UserInfo) -> str:
        return user.email or user.slack_user_id

    def check_user_csr(self, csr_pem: str, subject: str) -> None:
        raise PolicyViolation("no CSRs here")

    def prepare(self, spec: GrantSpec) -> dict[str, Any]:
        return {}

    def grant(self, spec: GrantSpec, prepared: dict[str, Any]) -> GrantResult:
        return GrantResult({"binding": spec.request_id}, Delivery("ok"))

    def extend(self, spec: GrantSpec, reference: dict[str, Any]) -> GrantResult:
        return GrantResult(reference, Delivery("ok"))

    def revoke(self, spec: GrantSpec, reference: dict[str, Any]) -> None:
        pass

    def describe(self, spec: GrantSpec, reference: dict[str, Any]) -> str:
        return "quick"

    def shared_object(self, reference: dict[str, Any]) -> str | None:
        return None  # each grant has its own


def bench_config() -> Config:
    cluster = {"backend": "rbac", "approvers": [APPROVER], "approvers_channel": "C0REVIEW",
               "kubernetes": {"server": "https://k8s.example", "kubeconfig": "/dev/null"},
               "roles": {"view": {"cluster_role": "view", "max_duration": "2w",
                                  "require_reason": False}}}
    return parse_config({"clusters": {name: cluster for name in CLUSTERS}}, Path("bench.yaml"))


@contextmanager
def database(base_url: str) -> Iterator[str]:
    url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"k8sab_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed_history(engine: Engine, upto: int) -> None:
    """Grow the requests table to ``upto`` rows of other people's finished history."""
    with engine.begin() as connection:
        have = connection.execute(text("SELECT count(*) FROM access_requests")).scalar_one()
        if have >= upto:
            return
        connection.execute(text("""
            INSERT INTO access_requests (kind, requester_id, cluster, role, namespace,
                duration_seconds, reason, subject, state, break_glass, approved_by_policy,
                created_at, decided_at, activated_at, ends_at, ended_at, backend_ref, version)
            SELECT 'access', 'U0H' || (i % 20000), (ARRAY['staging','prod','dev','qa'])[1 + i % 4],
                'view', NULL, 3600, 'history', 'user' || (i % 20000) || '@example.com',
                (ARRAY['expired','expired','expired','revoked','denied','cancelled'])[1 + i % 6],
                false, false,
                now() - make_interval(secs => i * 30), now() - make_interval(secs => i * 30),
                now() - make_interval(secs => i * 30), now() - make_interval(secs => i * 30 - 3600),
                now() - make_interval(secs => i * 30 - 3600), '{}'::json, 0
            FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS i
        """), {"start": have + 1, "stop": upto})
    # A table in its steady state, vacuumed: otherwise autovacuum, woken by the inserts, would
    # take its turn in the middle of what is timed next.
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM (ANALYZE) access_requests"))


def seed_my_history(engine: Engine) -> None:
    """``ME``'s own 60 past requests, spread over ten years: every size returns a full page."""
    with engine.begin() as connection:
        connection.execute(text("""
            INSERT INTO access_requests (kind, requester_id, cluster, role, duration_seconds,
                reason, subject, state, break_glass, approved_by_policy, created_at,
                backend_ref, version)
            SELECT 'access', :me, 'staging', 'view', 3600, 'history', 'me@example.com',
                'expired', false, false, now() - make_interval(days => i * 60), '{}'::json, 0
            FROM generate_series(1, 60) AS i
        """), {"me": ME})


def clear_live(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM claimed_keys"))
        connection.execute(text("DELETE FROM slack_inbox"))
        connection.execute(text("DELETE FROM messages"))
        connection.execute(text("DELETE FROM operations"))
        connection.execute(text("DELETE FROM approvals"))
        connection.execute(text("DELETE FROM audit_events"))
        connection.execute(text("DELETE FROM access_requests WHERE reason <> 'history'"))


def runtime_for(engine: Engine, slack: FakeSlack, clock: Callable[[], datetime] | None = None,
                ) -> SlackRuntime:
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                        slack_api_url=slack.api_url)
    granter = QuickGranter()
    return build_slack_runtime(settings, bench_config(), http=True, engine=engine,
                               granters={name: granter for name in CLUSTERS},
                               clock=clock or (lambda: datetime.now(UTC)))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs, after a few to warm the caches up."""
    for _ in range(5):
        action()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


# --- 1. acknowledgement latency ------------------------------------------------------------

ROUNDS = 5
"""Each app is timed in this many rounds of ``count`` requests, in turns with the others."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(args: list[str], env: dict[str, str], health: str) -> Iterator[int]:
    """A server in a process of its own, so that the load generator shares no CPU lock."""
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(health, timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(f"{args[0]} did not start") from None
                time.sleep(0.1)
        yield child.pid
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def bot_process(database_url: str, slack_url: str, folder: Path, port: int) -> Any:
    config = folder / "k8s-access.yaml"
    cluster = {"backend": "gitlab", "approvers": [APPROVER], "approvers_channel": "C0REVIEW",
               "gitlab": {"agent_id": 1, "kas_proxy_url": "https://kas.invalid/k8s-proxy",
                          "url": "http://127.0.0.1:9"},
               "roles": {"view": {"group": "a/b", "max_duration": "2w",
                                  "require_reason": False}}}
    config.write_text(json.dumps({"clusters": {name: cluster for name in CLUSTERS}}))
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack_url + "/api/", "DATABASE_URL": database_url,
           "K8S_ACCESS_CONFIG": str(config), "GITLAB_TOKEN": "glpat-bench",
           "LOG_LEVEL": "WARNING"}
    env.pop("SLACK_APP_TOKEN", None)
    return process([str(Path(sys.executable).parent / "k8s-access-bot"), "serve", "--http",
                    "--host", "127.0.0.1", "--port", str(port), "--no-jobs"], env,
                   f"http://127.0.0.1:{port}/healthz")


class SlackProcess:
    """``bench.slack_server``: a local Slack in its own process."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "bench.slack_server"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert self._child.stdout is not None
        self.url = self._child.stdout.readline().strip()
        self.api_url = self.url + "/api/"
        self._sent = 0

    def response_url(self) -> str:
        self._sent += 1
        return f"{self.url}/respond/{self._sent}"

    def stop(self) -> int:
        """How many answers it received."""
        output, _ = self._child.communicate(timeout=30)
        return int(output.strip().splitlines()[-1])


def payloads(slack: FakeSlack | SlackProcess, count: int, request_ids: list[int]) -> list[str]:
    bodies = []
    for n in range(count):
        if n % 2:
            bodies.append(urlencode({
                "user_id": ME, "command": "/k8s-access", "text": "list",
                "response_url": slack.response_url(), "trigger_id": f"t{n}", "team_id": "T"}))
        else:
            action = {"type": "block_actions", "user": {"id": APPROVER}, "team": {"id": "T"},
                      "trigger_id": f"t{n}", "response_url": slack.response_url(),
                      "channel": {"id": "C0REVIEW"},
                      "actions": [{"type": "button", "action_id": "approve", "block_id": "b",
                                   "value": str(random.choice(request_ids))}]}
            bodies.append(urlencode({"payload": json.dumps(action)}))
    return bodies


def dispatch_times(app: App, bodies: list[str]) -> list[float]:
    """Bolt's own dispatch, no HTTP: the acknowledgement path alone."""
    times = []
    for body in bodies:
        headers: dict[str, str | Sequence[str]] = {**signed_headers(body)}
        request = BoltRequest(body=body, headers=headers)
        started = time.perf_counter()
        response = app.dispatch(request)
        times.append(time.perf_counter() - started)
        assert response.status == 200, response.body
    time.sleep(0.5)  # let the work after each acknowledgement finish before the next phase
    return times


def latencies(endpoint: str, bodies: list[str], concurrency: int, keep_alive: bool) -> list[float]:
    """Seconds per request, ``concurrency`` at a time: each on a new connection, or each client
    keeping its connection open (as an ingress proxy in front of the bot does).

    The load generator shares the two cores with the servers it times, where Slack would not:
    it signs every request before the clock starts and speaks HTTP on a bare socket, to take as
    little CPU from them as it can."""
    address = urlsplit(endpoint)
    server = (address.hostname or "127.0.0.1", address.port or 80)
    signed = [_raw_request(address.path, body, keep_alive) for body in bodies]
    clients = threading.local()
    opened: list[socket.socket] = []

    def send(request: bytes) -> float:
        started = time.perf_counter()
        connection: socket.socket | None = getattr(clients, "connection", None)
        if connection is None:
            connection = socket.create_connection(server, timeout=30)
            if keep_alive:
                clients.connection = connection
                opened.append(connection)
        connection.sendall(request)
        status = _read_response(connection)
        if not keep_alive:
            connection.close()
        elapsed = time.perf_counter() - started
        assert status == 200, status
        return elapsed

    # The load generator's own full collections (its heap holds the whole bot) would stall
    # whichever server it happens to be timing.
    gc.collect()
    gc.disable()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(send, signed))
    finally:
        gc.enable()
        for connection in opened:
            connection.close()


def _raw_request(path: str, body: str, keep_alive: bool) -> bytes:
    payload = body.encode()
    headers = {**signed_headers(body), "host": "127.0.0.1", "content-length": str(len(payload)),
               "connection": "keep-alive" if keep_alive else "close"}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + payload


def _read_response(connection: socket.socket) -> int:
    """Read one response whole; its status."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                   if line.lower().startswith("content-length:")), 0)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        body += chunk
    return int(lines[0].split()[1])


def waiting_work(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(
            "SELECT count(*) FROM slack_inbox WHERE done_at IS NULL")).scalar_one())


def drained(engine: Engine, timeout: float = 120) -> float:
    """Seconds until the bot's worker has done every acknowledged request."""
    started = time.perf_counter()
    while waiting_work(engine) and time.perf_counter() - started < timeout:
        time.sleep(0.05)
    return time.perf_counter() - started


def bench_ack(engine: Engine, database_url: str, count: int,
              concurrencies: tuple[int, ...]) -> None:
    print("\n1. Acknowledgement latency (100 000 historic requests in PostgreSQL)")
    seed_history(engine, 100_000)
    slack = FakeSlack(users={ME: {"email": "me@example.com"}}, channels={"C0REVIEW"}).start()
    runtime = runtime_for(engine, slack)
    ids = [access.file_request(runtime.ctx, ME, c, "view", duration=timedelta(hours=1)).id or 0
           for c in CLUSTERS[:1]]
    apps = {"default": bare_app(slack.api_url), "same": bare_app(slack.api_url, True),
            "ours": runtime.app}
    isolated = {name: statistics.median(dispatch_times(app, payloads(slack, 100, ids)))
                for name, app in apps.items()}
    runtime.inbox.close()
    clear_live(engine)  # what the in-process runs kept: no worker is to answer it
    for name, label in (("default", "bare bolt app, Bolt's default mode"),
                        ("same", "bare bolt app, answering before returning"),
                        ("ours", "k8s-access-bot (keeps the request in the inbox)")):
        row("ack", f"in-process, one at a time: {label}", f"{isolated[name] * 1000:.1f} ms",
            f"{isolated[name] / isolated['same']:.2f}×")
    slack.stop()
    ours_port, default_port, same_port = free_port(), free_port(), free_port()
    endpoint = "http://127.0.0.1:{}/slack/events".format
    pythonpath = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    remote = SlackProcess()

    def bare_process(port: int, *mode: str) -> Any:
        return process([sys.executable, "-m", "bench.bare_app", str(port), remote.api_url,
                        *mode], pythonpath, f"http://127.0.0.1:{port}/healthz")

    sent = 0
    folder = Path(tempfile.mkdtemp())
    try:
        with bot_process(database_url, remote.url, folder, ours_port), \
                bare_process(default_port), bare_process(same_port, "before-response"):
            for concurrency, keep_alive in itertools.product(concurrencies, (False, True)):
                def run(port: int, count: int, keep_alive: bool = keep_alive,
                        concurrency: int = concurrency) -> list[float]:
                    return latencies(endpoint(port), payloads(remote, count, ids), concurrency,
                                     keep_alive)

                for port in (default_port, same_port, ours_port):  # warm all three up
                    run(port, 40)
                sent += 40
                # Rounds taking turns, so that a slow moment of the machine falls on all three.
                runs: dict[int, list[float]] = {default_port: [], same_port: [], ours_port: []}
                drain_times = []
                for _ in range(ROUNDS):
                    for port in runs:
                        drained(engine)
                        runs[port] += run(port, count)
                    sent += count
                    drain_times.append(drained(engine))
                setting = (f"x{concurrency}, " + ("kept-alive connections" if keep_alive
                                                  else "a connection per request"))
                _ack_rows(runs[default_port], runs[same_port], runs[ours_port], setting)
                row("ack", f"  {setting}: until the worker had answered all",
                    f"{max(drain_times) * 1000:.0f} ms", "")
    finally:
        answered = remote.stop()
    row("ack", "requests the bot acknowledged / answered", f"{sent} / {answered}", "")
    clear_live(engine)


def _ack_rows(default: list[float], same: list[float], ours: list[float], setting: str) -> None:
    """p50 and p99 of the three apps; the bot's ratios to Bolt's default app, then to the app
    in the bot's own mode."""
    for label, share in (("p50", 0.5), ("p99", 0.99)):
        values = [percentile(times, share) * 1000 for times in (default, same, ours)]
        row("ack", f"{label} {setting}: default / same mode / bot",
            " / ".join(f"{value:.1f}" for value in values) + " ms",
            f"{values[2] / values[0]:.2f}× / {values[2] / values[1]:.2f}×")
    row("ack", f"  {setting}: slowest of the bot's {len(ours)}, against Slack's 3 s",
        f"{max(ours) * 1000:.0f} ms", f"{max(ours) / 3:.3f}")


# --- 2. query scaling ----------------------------------------------------------------------


class StatementLog:
    """The SQL a call sends, to EXPLAIN it afterwards."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "access_requests" in statement:
            self.statements.append((statement, parameters))

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def plans(self) -> list[str]:
        found = []
        with self.engine.connect() as connection:
            for statement, parameters in self.statements:
                plan = connection.exec_driver_sql("EXPLAIN " + statement, parameters).all()
                found.append("\n".join(line[0] for line in plan))
        return found


def live_requests(runtime: SlackRuntime) -> None:
    """What the queries look for: ME's few requests and a few pending for the approver."""
    for cluster in CLUSTERS:
        access.file_request(runtime.ctx, ME, cluster, "view", duration=timedelta(hours=2))
    for n in range(20):
        access.file_request(runtime.ctx, f"U0ASK{n:04d}", CLUSTERS[n % 4], "view",
                            duration=timedelta(hours=3))


def bench_queries(engine: Engine, sizes: list[int]) -> None:
    print("\n2. Query scaling with the size of the history")
    slack = FakeSlack(users={ME: {"email": "me@example.com"}}, channels={"C0REVIEW"}).start()
    runtime = runtime_for(engine, slack)
    home = Home(runtime.ctx)
    queries: dict[str, Callable[[], object]] = {
        "list mine": lambda: access.list_requests(runtime.ctx, ME, "mine"),
        "list pending (approver)": lambda: access.list_requests(runtime.ctx, APPROVER,
                                                                "pending"),
        "list all (admin view of an approver)": lambda: access.list_requests(
            runtime.ctx, APPROVER, "all"),
        "App Home (both lists + render + publish)": lambda: home.publish(
            runtime.client, APPROVER),
    }
    base: dict[str, float] = {}
    seed_my_history(engine)
    try:
        for size in sizes:
            seed_history(engine, size)
            clear_live(engine)
            live_requests(runtime)
            for name, query in queries.items():
                seconds = timed(query, 60)
                base.setdefault(name, seconds)
                row("queries", f"{name} @ {size:,} rows", f"{seconds * 1000:.2f} ms",
                    f"{seconds / base[name]:.2f}×")
        log = StatementLog(engine)
        for query in queries.values():
            query()
        log.close()
        indexes: Counter[str] = Counter()
        for plan in log.plans():
            indexes.update(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\S+)", plan))
            indexes.update(re.findall(r"Bitmap Index Scan on (\S+)", plan))
            indexes.update("SEQUENTIAL SCAN of access_requests"
                           for _ in re.findall(r"Seq Scan on access_requests", plan))
        row("queries", "EXPLAIN at the largest size: scans used",
            ", ".join(f"{k}×{v}" for k, v in sorted(indexes.items())), "")
    finally:
        slack.stop()
        clear_live(engine)


# --- 3. expiry sweep -----------------------------------------------------------------------


def bench_expiry(engine: Engine, sizes: list[int], due: int) -> None:
    print(f"\n3. Expiry sweep: {due} grants due")
    slack = FakeSlack(users={}, channels={"C0REVIEW"}).start()
    now = datetime.now(UTC)
    first: float | None = None
    try:
        for size in sizes:
            seed_history(engine, size)
            clear_live(engine)
            runtime = runtime_for(engine, slack, clock=lambda: now)
            ctx = replace(runtime.ctx, notifier=_Silent())
            with engine.begin() as connection:  # active grants, ended a minute ago
                connection.execute(text("""
                    INSERT INTO access_requests (kind, requester_id, cluster, role,
                        duration_seconds, reason, subject, state, break_glass,
                        approved_by_policy, created_at, activated_at, ends_at, backend_ref,
                        version)
                    SELECT 'access', 'U0DUE' || i, 'staging', 'view', 3600, 'due',
                        'due' || i || '@example.com', 'active', false, true,
                        :now - interval '61 minutes', :now - interval '61 minutes',
                        :now - interval '1 minute', '{}'::json, 0
                    FROM generate_series(1, CAST(:due AS integer)) AS i
                """), {"now": now, "due": due})
            started = time.perf_counter()
            handled = 0
            while (done := grants.expire_due(ctx, limit=500)):
                handled += done
            seconds = time.perf_counter() - started
            assert handled == due, handled
            first = first or seconds
            row("expiry", f"{due} due among {size:,} rows", f"{seconds:.2f} s",
                f"{seconds / first:.2f}×")
            row("expiry", f"  per grant @ {size:,}", f"{seconds / due * 1000:.2f} ms", "")
    finally:
        slack.stop()
        clear_live(engine)


class _Silent:
    def notify(self, notice: Any) -> None:
        pass

    def remind(self, user_id: str, grants_: Any, admins: Any = ()) -> None:
        pass

    def review(self, review: Any, admins: Any = ()) -> None:
        pass

    def update_review(self, review: Any) -> None:
        pass


# --- 4. weekly reminders under Slack's rate limits -----------------------------------------


def seed_active_grants(engine: Engine, users: int, now: datetime) -> None:
    """One active grant each for ``users`` people, ending in two days: all due a weekly DM."""
    with engine.begin() as connection:
        connection.execute(text("""
            INSERT INTO access_requests (kind, requester_id, cluster, role,
                duration_seconds, reason, subject, state, break_glass, approved_by_policy,
                created_at, activated_at, ends_at, backend_ref, version)
            SELECT 'access', 'U0R' || lpad(i::text, 6, '0'), 'staging', 'view', 86400,
                'reminded', 'r' || i || '@example.com', 'active', false, true,
                :now - interval '1 day', :now - interval '1 day',
                :now + interval '2 days', '{}'::json, 0
            FROM generate_series(1, CAST(:users AS integer)) AS i
        """), {"now": now, "users": users})


def bench_reminders(engine: Engine, users: int, global_rate: int) -> None:
    print(f"\n4. Weekly reminders for {users:,} users under Slack-like rate limits")
    clear_live(engine)
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    slack = FakeSlack(users={}, channels={"C0REVIEW"}, per_channel_interval=1.0,
                      global_per_second=global_rate).start()
    try:
        runtime = runtime_for(engine, slack, clock=lambda: monday)
        seed_active_grants(engine, users, monday)
        started = time.perf_counter()
        sent = reminders.weekly(runtime.ctx)
        seconds = time.perf_counter() - started
        dms = _dms(slack)
        # Each user has one DM channel: at most one message each, so the per-channel limit
        # never bites there; the workspace-wide rate sets the floor.
        floor = users / global_rate
        row("reminders", f"messages sent ({users:,} DMs + the review)", f"{sent:,}", "")
        row("reminders", "every user reminded exactly once",
            "yes" if len(dms) == users and set(dms.values()) == {1} else "NO", "")
        row("reminders", "429 answers survived", f"{slack.limited:,}", "")
        row("reminders", f"floor set by {global_rate}/s workspace-wide", f"{floor:.1f} s",
            "1.00×")
        row("reminders", "total time", f"{seconds:.1f} s", f"{seconds / floor:.2f}×")
    finally:
        slack.stop()
        clear_live(engine)


def _rss_mib(pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_serve_memory(engine: Engine, database_url: str, users: int) -> None:
    """``serve`` with its worker, as deployed: resident memory at rest, then after the worker's
    own weekly run has sent ``users`` DMs."""
    print(f"\n5. Memory of serve and its worker, at rest and after {users:,} reminders")
    clear_live(engine)
    slack = FakeSlack(users={}, channels={"C0REVIEW"}).start()
    folder = Path(tempfile.mkdtemp())
    config = folder / "k8s-access.yaml"
    now = datetime.now(UTC)
    config.write_text(json.dumps({
        # This minute's weekly moment: a worker that starts within the catch-up sends it.
        "schedules": {"reminders": f"{now.minute} {now.hour} * * *"},
        "clusters": {"staging": {
            "backend": "gitlab", "approvers": [APPROVER], "approvers_channel": "C0REVIEW",
            "gitlab": {"agent_id": 1, "kas_proxy_url": "https://kas.invalid/k8s-proxy",
                       "url": "http://127.0.0.1:9"},
            "roles": {"view": {"group": "a/b"}}}}}))
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack.api_url, "DATABASE_URL": database_url,
           "K8S_ACCESS_CONFIG": str(config), "GITLAB_TOKEN": "glpat-bench",
           "LOG_LEVEL": "CRITICAL"}
    env.pop("SLACK_APP_TOKEN", None)
    args = [str(Path(sys.executable).parent / "k8s-access-bot"), "serve", "--http",
            "--host", "127.0.0.1", "--port", str(port)]
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        with process(args, env, health) as serve:  # nobody to remind yet
            time.sleep(4)
            row("memory", "serve + worker at rest", _memory_of(serve), "")
        seed_active_grants(engine, users, now)
        started = time.perf_counter()
        with process(args, env, health) as serve:  # its worker sends the reminders at once
            while len(_dms(slack)) < users and time.perf_counter() - started < 300:
                time.sleep(0.2)
            seconds = time.perf_counter() - started
            row("memory", f"serve + worker after the reminder run ({seconds:.0f} s)",
                _memory_of(serve), "")
        dms = _dms(slack)
        row("memory", "every user reminded exactly once by the worker",
            "yes" if len(dms) == users and set(dms.values()) == {1} else "NO", "")
    finally:
        slack.stop()
        clear_live(engine)


def _dms(slack: FakeSlack) -> Counter[str]:
    """Messages per DM channel: each user has one."""
    return Counter(channel for channel, _ in list(slack.messages) if channel.startswith("D"))


def _memory_of(serve: int) -> str:
    return f"{_rss_mib(str(serve)):.0f} + {_rss_mib(str(_worker_of(serve))):.0f} MiB"


def _worker_of(serve: int) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == serve and b"--wake-on-stdin" in cmdline:
            return int(stat.parent.name)
    raise RuntimeError("serve started no worker")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--postgres", default=os.environ.get(
        "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    print(f"{'':2}{'section':<18} {'measure':<46} {'value':>16} {'ratio':>12}")
    with database(args.postgres) as url:
        engine = make_engine(url, pool_size=20, max_overflow=10)
        migrate.upgrade(engine)
        bench_ack(engine, url, 100 if args.quick else 400, (4, 16))
        bench_queries(engine, sizes)
        bench_expiry(engine, [sizes[0], sizes[-1]], 200 if args.quick else 1000)
        bench_reminders(engine, 1_000 if args.quick else 10_000, 300)
        bench_serve_memory(engine, url, 1_000 if args.quick else 10_000)
        engine.dispose()
    print("\n| section | measure | value | ratio |\n| --- | --- | --- | --- |")
    for section, measure, value, ratio in ROWS:
        print(f"| {section} | {measure.strip()} | {value} | {ratio} |")


if __name__ == "__main__":
    main()
