"""Benchmarks: ``python -m bench`` (PostgreSQL, about 5 minutes on two cores; ``--quick``
under one).

Every number is set beside a baseline measured in the same run, and reported as a ratio:
the bot's acknowledgements beside a bare slack-bolt app that only acknowledges; queries at 10⁶
rows beside the same work at 10⁴; then the rows of :mod:`bench.outside`, which drive the bot
only from outside (forms, kubeconfigs, expiry, reminders, replicas, memory). Nothing here is a
test: there are no thresholds, only a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from slack_bolt import App
from slack_bolt.request import BoltRequest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from bench import outside
from bench.bare_app import bare_app
from bench.load import send_all
from bench.processes import APPROVER, CLUSTERS, ME, Server, SlackProcess, free_port, processes
from bot.adapters.db import migrate
from bot.adapters.db.engine import make_engine
from bot.adapters.slack.home import Home
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings, parse_config
from bot.domain.errors import PolicyViolation
from bot.domain.ports import Delivery, GrantResult, GrantSpec, UserInfo
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers
from bot.services import access, grants

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
        connection.execute(text("DELETE FROM access_review_decisions"))
        connection.execute(text("DELETE FROM access_review_items"))
        connection.execute(text("DELETE FROM access_reviews"))
        connection.execute(text("DELETE FROM audit_deliveries"))
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



def bot_process(database_url: str, slack_url: str, folder: Path, port: int) -> Server:
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
    return ([str(Path(sys.executable).parent / "k8s-access-bot"), "serve", "--http",
             "--host", "127.0.0.1", "--port", str(port), "--no-jobs"], env,
            f"http://127.0.0.1:{port}/healthz")


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


def bench_ack(engine: Engine, database_url: str, count: int, rounds: int,
              concurrencies: tuple[int, ...], keep_alive_too: bool = True) -> None:
    """Each app is timed in ``rounds`` rounds of ``count`` requests, in turns with the others;
    on a connection per request, and on kept-alive connections unless ``keep_alive_too`` is
    false."""
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

    def bare_process(port: int, *mode: str) -> Server:
        return ([sys.executable, "-m", "bench.bare_app", str(port), remote.api_url, *mode],
                pythonpath, f"http://127.0.0.1:{port}/healthz")

    sent = 0
    folder = Path(tempfile.mkdtemp())
    try:
        with processes(bot_process(database_url, remote.url, folder, ours_port),
                       bare_process(default_port), bare_process(same_port, "before-response")):
            for concurrency, keep_alive in itertools.product(
                    concurrencies, (False, True) if keep_alive_too else (False,)):
                def run(port: int, count: int, keep_alive: bool = keep_alive,
                        concurrency: int = concurrency) -> list[float]:
                    sent = send_all(endpoint(port), payloads(remote, count, ids),
                                    concurrency, keep_alive)
                    return [request.seconds for request in sent]

                for port in (default_port, same_port, ours_port):  # warm all three up
                    run(port, 40)
                sent += 40
                # Rounds taking turns, so that a slow moment of the machine falls on all three.
                runs: dict[int, list[float]] = {default_port: [], same_port: [], ours_port: []}
                drain_times = []
                for _ in range(rounds):
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
        answered = remote.stop().answers
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


def bench_queries(engine: Engine, sizes: list[int], repeat: int) -> None:
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
        "next grant due (the expiry job's wake)": lambda: grants.next_expiry(runtime.ctx),
    }
    base: dict[str, float] = {}
    seed_my_history(engine)
    try:
        for size in sizes:
            seed_history(engine, size)
            clear_live(engine)
            live_requests(runtime)
            for name, query in queries.items():
                seconds = timed(query, repeat)
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
        wake = StatementLog(engine)
        grants.next_expiry(runtime.ctx)
        wake.close()
        row("queries", "  the expiry job's wake (next grant due): its plan's scans",
            ", ".join(re.findall(r"(?:Index (?:Only )?Scan(?: Backward)?|Seq Scan) (?:using|on) "
                                 r"\S+", "\n".join(wake.plans()))), "")
    finally:
        slack.stop()
        clear_live(engine)


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


SECTIONS = ("ack", "queries", "forms", "expiry", "reminders", "replicas", "memory")


@contextmanager
def took(name: str) -> Iterator[None]:
    """Print how long a section took: where a run's minutes go."""
    started = time.monotonic()
    yield
    print(f"  ({name}: {time.monotonic() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--postgres", default=os.environ.get(
        "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"no section {', '.join(sorted(only - set(SECTIONS)))}: choose among "
                     f"{', '.join(SECTIONS)}")
    quick = args.quick
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    started = time.monotonic()
    print(f"{'':2}{'section':<18} {'measure':<46} {'value':>16} {'ratio':>12}")
    with database(args.postgres) as url:
        engine = make_engine(url, pool_size=20, max_overflow=10)
        migrate.upgrade(engine)
        if "ack" in only:
            with took("ack"):
                bench_ack(engine, url, 40 if quick else 400, 2 if quick else 5, (4, 16),
                          keep_alive_too=not quick)
        if "queries" in only:
            with took("queries"):
                bench_queries(engine, sizes, 20 if quick else 60)
        if "forms" in only:
            with took("forms"):
                outside.bench_forms(engine, url, row, 48 if quick else 200, 1 if quick else 3,
                                    12 if quick else 100)
        start = 0.0  # seconds a one-shot pass takes to start, left out of the reminder run
        if "expiry" in only:
            with took("expiry"):
                start = outside.bench_expiry(
                    engine, url, row, [sizes[-1]] if quick else [sizes[0], sizes[-1]],
                    100 if quick else 1000, 300 if quick else 10_000,
                    timedelta(seconds=10) if quick else outside.SWEEP, seed_history, clear_live,
                    1 if quick else 3)
        if "reminders" in only:
            with took("reminders"):
                outside.bench_reminders(engine, url, row, 1_000 if quick else 10_000, 300,
                                        seed_active_grants, clear_live, start)
        if "replicas" in only:
            with took("replicas"):
                outside.bench_replicas(engine, url, row, 48 if quick else 400,
                                       None if quick else 500, clear_live)
        if "memory" in only:
            with took("memory"):
                outside.bench_memory(engine, url, row, 500 if quick else 10_000,
                                     seed_active_grants, clear_live)
        engine.dispose()
    print(f"\n{'quick' if quick else 'full'} run: {time.monotonic() - started:.0f} s")
    print("\n| section | measure | value | ratio |\n| --- | --- | --- | --- |")
    for section, measure, value, ratio in ROWS:
        print(f"| {section} | {measure.strip()} | {value} | {ratio} |")


if __name__ == "__main__":
    main()
