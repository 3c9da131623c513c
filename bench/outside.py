"""The rows that drive the bot only from outside, as deployed: ``serve`` and its worker, one-shot
``jobs run`` passes, signed HTTP requests, the database, and the calls the local Slack and
Kubernetes receive. Each row stands beside a baseline measured in the same run.

- forms: an incomplete ``request`` and Deny/Extend clicks, in bursts mixed with work, until the
  local Slack receives ``views.open``; beside a bare Bolt app opening the same form;
- kubeconfig: an Approve click until the kubeconfig is shared in the requester's DM; beside a
  bare Bolt app doing the same outside calls in its listener;
- expiry: bot time per due grant in ``jobs run expire`` passes, and the lag from a grant's end
  to its access ended with a minute of grants ending in ``serve`` on the largest table;
- reminders: ``jobs run remind`` under Slack's posting limits, beside the floor they set;
- replicas: two ``serve`` processes on one PostgreSQL, beside one;
- memory: ``serve`` and its worker beside a bare Bolt app.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench.load import Sent, click, command, send_all
from bench.processes import (
    APPROVER,
    CLUSTERS,
    ME,
    PYTHONPATH,
    ClusterProcess,
    SlackCounts,
    SlackProcess,
    bot_environment,
    free_port,
    memory_label,
    processes,
    replica_rss,
    requester,
    rss_mib,
    run_cli,
    serve,
    serving,
)
from bot.adapters.kubernetes.bindings import (
    BOT as BINDINGS_BY,
)
from bot.adapters.kubernetes.bindings import (
    DEFAULT_INSTALLATION,
    MANAGED_BY,
    RBAC,
    REQUEST_ANNOTATION,
    Owner,
)

Row = Callable[[str, str, str, str], None]
TRIGGER_VALID = 3.0
"""Seconds Slack accepts a ``trigger_id`` for ``views.open`` (Slack's "Using modals" guide)."""
SWEEP = timedelta(minutes=1)
"""The expiry sweep's default interval (``schedules.expiry_sweep``)."""
PEOPLE = 6000
"""People the local Slack knows: each fresh request has a requester of its own."""


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}/slack/events"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] if ordered else math.nan


def spread(values: list[float], unit: float = 1000, digits: int = 0) -> str:
    """``p50 / p99 / slowest`` in ``unit`` (ms by default)."""
    return " / ".join(f"{percentile(values, share) * unit:.{digits}f}"
                      for share in (0.5, 0.99, 1.0))


def ratio(ours: list[float], base: list[float]) -> str:
    """The bot's p50 and p99 over the baseline's."""
    return " / ".join(f"{percentile(ours, share) / percentile(base, share):.2f}×"
                      for share in (0.5, 0.99))


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def idle(engine: Engine, timeout: float = 120) -> bool:
    """Every acknowledged request done, and no backend call owed now."""
    return wait_until(lambda: not scalar(
        engine, "SELECT (SELECT count(*) FROM slack_inbox WHERE done_at IS NULL) + "
                "(SELECT count(*) FROM access_requests WHERE state = 'approved')"), timeout)


def repeated_audit(engine: Engine) -> int:
    """Audit events beyond the first of one action on one request: work done twice."""
    return int(scalar(engine, """
        SELECT coalesce(sum(n - 1), 0) FROM (
            SELECT count(*) AS n FROM audit_events WHERE request_id IS NOT NULL
            GROUP BY request_id, action) AS per"""))


# --- the deployment under test ------------------------------------------------------------


@dataclass
class Bot:
    """The local Slack and Kubernetes, and the bot's environment (its YAML file included)."""

    engine: Engine
    slack: SlackProcess
    cluster: ClusterProcess
    env: dict[str, str]
    folder: Path
    next_person: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    counts: SlackCounts | None = None
    """What the local Slack counted, once it has stopped."""

    def person(self) -> str:
        self.next_person += 1
        assert self.next_person < PEOPLE, "the local Slack knows too few people"
        return requester(self.next_person)

    def fresh_requests(self, count: int, port: int) -> list[tuple[int, str]]:
        """``count`` pending requests no one has decided, each by a person of its own, filed
        through the bot (``request staging view 1h fresh``): ``(id, requester)``."""
        have = self.pending()
        if len(have) < count:
            bodies = [command(self.person(), "request staging view 1h fresh",
                              self.slack.response_url())[0] for _ in range(count - len(have))]
            send_all(endpoint(port), bodies, 4)
            wait_until(lambda: len(self.pending()) >= count, 120)
            idle(self.engine)
        return self.pending()[:count]

    def pending(self) -> list[tuple[int, str]]:
        with self.engine.connect() as connection:
            return [(int(i), str(r)) for i, r in connection.execute(text(
                "SELECT id, requester_id FROM access_requests WHERE state = 'pending' AND "
                "reason = 'fresh' ORDER BY id"))]

    def arrived(self) -> list[dict[str, Any]]:
        self.events += self.slack.new_events()
        return self.events


@contextmanager
def deployment(engine: Engine, database_url: str, **schedules: str) -> Iterator[Bot]:
    slack = SlackProcess(users=PEOPLE)
    cluster = ClusterProcess()
    folder = Path(tempfile.mkdtemp(prefix="bench-bot-"))
    bot = Bot(engine, slack, cluster,
              bot_environment(database_url, slack, cluster, folder, **schedules), folder)
    try:
        yield bot
    finally:
        bot.counts = slack.stop()
        cluster.stop()


def active_grant_of(bot: Bot, user: str, port: int) -> int:
    """A grant of ``user``'s, made through the bot: requested, approved, active."""
    send_all(endpoint(port), [command(user, "request prod view 1w standing",
                                      bot.slack.response_url())[0]], 1)
    assert wait_until(lambda: bool(scalar(bot.engine, "SELECT count(*) FROM access_requests "
                                          "WHERE requester_id = :u AND reason = 'standing'",
                                          u=user)), 60)
    grant = int(scalar(bot.engine, "SELECT max(id) FROM access_requests WHERE requester_id = :u "
                       "AND reason = 'standing'", u=user))
    send_all(endpoint(port), [click(APPROVER, "approve", str(grant), bot.slack.response_url())[0]],
             1)
    assert wait_until(lambda: scalar(bot.engine, "SELECT state FROM access_requests WHERE id = :i",
                                     i=grant) == "active", 60), "the standing grant never started"
    return grant


# --- 1 and 2. forms and kubeconfigs --------------------------------------------------------


@dataclass
class Burst:
    """Signed bodies in a shuffled order; which of them open a form, which approve whom."""

    bodies: list[str] = field(default_factory=list)
    forms: dict[int, str] = field(default_factory=dict)
    """Index of a body → its trigger_id."""
    approvals: dict[int, str] = field(default_factory=dict)
    """Index of an Approve click → the requester's DM channel."""


def mixed_burst(bot: Bot, count: int, approvable: list[tuple[int, str]], deny_id: int,
                extend_id: int, bare: bool = False) -> Burst:
    """Half of ``count`` open forms (an incomplete ``request``, Deny, Extend, in turn); a
    quarter approve a fresh request (a certificate signed and shared); a quarter file a
    complete request (the approvers told). The bare app gets the same, its buttons carrying the
    requester's ID."""
    items: list[tuple[str, str, str | None, bool]] = []
    for n in range(count // 2):
        kind = n % 3
        if kind == 0:
            body, trigger = command(ME, "request staging", bot.slack.response_url())
        elif kind == 1:
            body, trigger = click(APPROVER, "deny", str(deny_id), bot.slack.response_url())
        else:
            body, trigger = click(ME, "extend", str(extend_id), bot.slack.response_url())
        items.append((body, trigger, None, True))
    for request_id, who in approvable[:count // 4]:
        body, _ = click(APPROVER, "approve", who if bare else str(request_id),
                        bot.slack.response_url())
        items.append((body, "", f"D{who}", False))
    while len(items) < count:
        who = bot.person()
        body, _ = command(who, f"request {random.choice(CLUSTERS)} view 1h fresh",
                          bot.slack.response_url())
        items.append((body, "", None, False))
    random.shuffle(items)
    burst = Burst()
    for n, (body, trigger, dm, form) in enumerate(items):
        burst.bodies.append(body)
        if form:
            burst.forms[n] = trigger
        if dm:
            burst.approvals[n] = dm
    return burst


@dataclass
class Outcome:
    forms: list[float] = field(default_factory=list)
    """Seconds from a request leaving to its form opening at the local Slack."""
    kubeconfigs: list[float] = field(default_factory=list)
    """Seconds from an Approve click to its kubeconfig shared in the requester's DM."""
    missing: int = 0
    """Forms or kubeconfigs that never arrived."""


def timed_burst(bot: Bot, burst: Burst, ports: list[int], concurrency: int,
                outcome: Outcome) -> None:
    """Send ``burst``; wait for its forms and files; add their latencies to ``outcome``."""
    sent = send_all([endpoint(port) for port in ports], burst.bodies, concurrency)
    triggers = {trigger: sent[n] for n, trigger in burst.forms.items()}
    dms = {dm: sent[n] for n, dm in burst.approvals.items()}

    def seen() -> tuple[dict[str, float], dict[str, float]]:
        forms, files = {}, {}
        for event in bot.arrived():
            if event["method"] == "views.open" and event["trigger_id"] in triggers:
                forms[event["trigger_id"]] = event["at"]
            elif event["method"] == "files.completeUploadExternal" and event["channel"] in dms:
                files[event["channel"]] = event["at"]
        return forms, files

    wait_until(lambda: [len(found) for found in seen()] == [len(triggers), len(dms)], 60)
    forms, files = seen()
    outcome.forms += [forms[t] - sent_.started for t, sent_ in triggers.items() if t in forms]
    outcome.kubeconfigs += [files[c] - sent_.started for c, sent_ in dms.items() if c in files]
    outcome.missing += len(triggers) - len(forms) + len(dms) - len(files)


def bench_forms(engine: Engine, database_url: str, row: Row, count: int, rounds: int,
                kubeconfigs: int) -> None:
    print("\n6. Forms while the trigger_id is valid; click to kubeconfig (local Kubernetes "
          "signing at once)", flush=True)
    with deployment(engine, database_url) as bot, ExitStack() as running:
        port = free_port()
        running.enter_context(serve(bot.env, port))
        deny_id = bot.fresh_requests(1, port)[0][0]
        extend_id = active_grant_of(bot, ME, port)
        with engine.begin() as connection:  # the Deny target stays pending: not approvable
            connection.execute(text("UPDATE access_requests SET reason = 'deny me' "
                                    "WHERE id = :i"), {"i": deny_id})
        warm = mixed_burst(bot, 24, bot.fresh_requests(6, port), deny_id, extend_id)
        timed_burst(bot, warm, [port], 4, Outcome())
        idle(engine)
        view = next(event["view"] for event in bot.arrived() if event["method"] == "views.open")
        form = bot.folder / "form.json"
        form.write_text(view if isinstance(view, str) else json.dumps(view))
        bare_port, bare_kubeconfig_port = free_port(), free_port()
        credentials = bot.folder / "cluster.json"
        credentials.write_text(json.dumps(bot.cluster.credentials))
        running.enter_context(processes(
            ([sys.executable, "-m", "bench.bare_app", str(bare_port), bot.slack.api_url,
              "forms", str(form)], PYTHONPATH, f"http://127.0.0.1:{bare_port}/healthz"),
            ([sys.executable, "-m", "bench.bare_app", str(bare_kubeconfig_port),
              bot.slack.api_url, "kubeconfig", str(credentials)], PYTHONPATH,
             f"http://127.0.0.1:{bare_kubeconfig_port}/healthz")))
        for concurrency in (4, 16):
            ours, base = Outcome(), Outcome()
            for _ in range(rounds):  # taking turns: a slow moment falls on both
                approvable = bot.fresh_requests(count // 4, port)
                timed_burst(bot, mixed_burst(bot, count, approvable, deny_id, extend_id),
                            [port], concurrency, ours)
                idle(engine)
                timed_burst(bot, mixed_burst(bot, count, approvable, deny_id, extend_id,
                                             bare=True), [bare_port], concurrency, base)
            label = f"x{concurrency}, {rounds} × {count} mixed"
            row("forms", f"{label}: bare Bolt app opening the form, p50 / p99 / slowest",
                spread(base.forms) + " ms", "1.00×")
            row("forms", f"{label}: k8s-access-bot, p50 / p99 / slowest",
                spread(ours.forms) + " ms", ratio(ours.forms, base.forms))
            row("forms", f"  x{concurrency}: forms past Slack's 3 s (bare / bot) of "
                f"{len(ours.forms) + ours.missing}",
                f"{sum(t > TRIGGER_VALID for t in base.forms) + base.missing} / "
                f"{sum(t > TRIGGER_VALID for t in ours.forms) + ours.missing}", "")
            row("kubeconfig", f"  x{concurrency} mixed: click → kubeconfig, bot p50 / p99 / "
                "slowest", spread(ours.kubeconfigs) + " ms", "")
        bench_kubeconfig(bot, row, kubeconfigs, port, bare_kubeconfig_port)


def bench_kubeconfig(bot: Bot, row: Row, count: int, port: int, bare_port: int) -> None:
    """Approve clicks only, four at a time, on the bot serving at ``port``; beside a bare app
    doing the same calls, at ``bare_port``."""
    ours, base = Outcome(), Outcome()
    for half in (count // 2, count - count // 2):
        approvable = bot.fresh_requests(half, port)
        clicks = Burst()
        for n, (request_id, who) in enumerate(approvable):
            clicks.bodies.append(click(APPROVER, "approve", str(request_id),
                                       bot.slack.response_url())[0])
            clicks.approvals[n] = f"D{who}"
        timed_burst(bot, clicks, [port], 4, ours)
        idle(bot.engine)
        bare = Burst()
        for n in range(half):
            who = bot.person()
            bare.bodies.append(click(APPROVER, "approve", who, bot.slack.response_url())[0])
            bare.approvals[n] = f"D{who}"
        timed_burst(bot, bare, [bare_port], 4, base)
    row("kubeconfig", f"x4, {count} Approve clicks: bare Bolt app doing the same calls, p50 / "
        "p99 / slowest", spread(base.kubeconfigs) + " ms", "1.00×")
    row("kubeconfig", "x4: k8s-access-bot, p50 / p99 / slowest",
        spread(ours.kubeconfigs) + " ms", ratio(ours.kubeconfigs, base.kubeconfigs))
    if ours.missing or base.missing:
        row("kubeconfig", "kubeconfigs that never arrived (bare / bot)",
            f"{base.missing} / {ours.missing}", "")


# --- 3. expiry -----------------------------------------------------------------------------


APPROVERS_CHANNEL = "C0REVIEW"
BOT_LABEL = f"{MANAGED_BY}={BINDINGS_BY}"


def insert_due(bot: Bot, count: int, window: timedelta, now: datetime,
               who: str = "U0DUE") -> list[int]:
    """``count`` active grants of people ``who`` + a number, their ends spread evenly over the
    ``window`` before ``now``, each with what a grant the bot made has: its
    ClusterRoleBinding on the local Kubernetes, labelled as the bot's; the backend reference
    the bot stored (the binding, its UID, the certificate); its approval message in the
    approvers' channel of the local Slack, and that message's row. Their IDs."""
    with bot.engine.begin() as connection:
        grants = connection.execute(text("""
            INSERT INTO access_requests (kind, requester_id, cluster, role,
                duration_seconds, reason, subject, state, break_glass,
                approved_by_policy, created_at, activated_at, ends_at, backend_ref,
                version)
            SELECT 'access', :who || i, 'staging', 'view', 3600, 'due',
                'due' || i || '@example.com', 'active', false, true,
                :now - interval '2 hours', :now - interval '2 hours',
                :now - make_interval(secs => :window * i / CAST(:count AS integer)),
                '{}'::json, 0
            FROM generate_series(1, CAST(:count AS integer)) AS i
            RETURNING id, requester_id, subject, ends_at
        """), {"now": now, "count": count, "window": window.total_seconds(),
              "who": who}).all()
    owner = Owner(DEFAULT_INSTALLATION, "staging")
    created = bot.cluster.create([{
        "apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": owner.binding_name(grant), "labels": owner.labels,
                     "annotations": {REQUEST_ANNOTATION: str(grant),
                                     "k8s-access-bot/requester": requester_id,
                                     "k8s-access-bot/ends-at": ends_at.isoformat()}},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "apiGroup": RBAC, "name": subject}]}
        for grant, requester_id, subject, ends_at in grants])
    stamps = bot.slack.post(APPROVERS_CHANNEL, len(grants))
    made = [{"id": grant, "ts": ts, "ref": {
        "bindings": [{"name": owner.binding_name(grant), "namespace": None,
                      "uid": binding["uid"], "resource_version": binding["resourceVersion"]}],
        "certificate_not_after": (ends_at + timedelta(minutes=1)).isoformat(),
        "certificate_serial": f"{grant:x}"}}
        for (grant, _, _, ends_at), binding, ts in zip(grants, created, stamps, strict=True)]
    with bot.engine.begin() as connection:
        connection.execute(text("""
            UPDATE access_requests AS r SET backend_ref = v.ref
            FROM json_to_recordset(CAST(:made AS json)) AS v(id integer, ref json)
            WHERE r.id = v.id"""), {"made": json.dumps(made)})
        connection.execute(text("""
            INSERT INTO messages (request_id, purpose, channel, ts)
            SELECT v.id, 'approval', :channel, v.ts
            FROM json_to_recordset(CAST(:made AS json)) AS v(id integer, ts text)"""),
            {"made": json.dumps(made), "channel": APPROVERS_CHANNEL})
    return [grant for grant, *_ in grants]


def lags(engine: Engine) -> list[float]:
    with engine.connect() as connection:
        return [float(lag) for (lag,) in connection.execute(text(
            "SELECT EXTRACT(EPOCH FROM ended_at - ends_at) FROM access_requests "
            "WHERE reason = 'due' AND ended_at IS NOT NULL"))]


SERVE_LEAD = timedelta(seconds=5)
"""From seeding's end to the first grant's end: ``serve`` and its worker start meanwhile."""


def ending_soon(bot: Bot, count: int, window: timedelta, who: str = "U0DUE") -> datetime:
    """``count`` grants as :func:`insert_due` makes them, their ends then spread evenly over the
    ``window`` that starts :data:`SERVE_LEAD` from now (the seeding itself takes a while): the
    first end."""
    insert_due(bot, count, window, datetime.now(UTC) + timedelta(days=1), who)
    first = datetime.now(UTC) + SERVE_LEAD
    with bot.engine.begin() as connection:
        connection.execute(text("""
            UPDATE access_requests AS r
            SET ends_at = :first + make_interval(secs => :window * n.k / CAST(:count AS integer))
            FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM access_requests
                  WHERE reason = 'due' AND state = 'active') AS n
            WHERE r.id = n.id"""), {"first": first, "window": window.total_seconds(),
                                    "count": count})
    return first


def ending_in_serve(bot: Bot, count: int, window: timedelta, rows: int, row: Row) -> list[float]:
    """``count`` grants ending over the coming ``window``, ended by ``serve --jobs`` as deployed
    (its expiry job waking when the next grant is due, at most every sweep): the lag from each
    grant's end to its access ended (``ended_at - ends_at``), in seconds."""
    first = ending_soon(bot, count, window)
    with serve(bot.env, free_port(), jobs=True):
        up = (first - datetime.now(UTC)).total_seconds()
        wait_until(lambda: len(lags(bot.engine)) == count,
                   window.total_seconds() + SWEEP.total_seconds() + 120)
    lag = lags(bot.engine)
    assert len(lag) == count, f"{len(lag)} of {count} ended"
    sweep = SWEEP.total_seconds()
    row("expiry", f"{count:,} ending over the coming {window.total_seconds():.0f} s, {rows:,} "
        f"rows, `serve` (up {up:.1f} s before the first end): lag p50 / p99 / max",
        spread(lag, 1, 2) + " s", f"{percentile(lag, 0.99) / sweep:.3f}× the sweep")
    return lag


@dataclass
class Passes:
    """``jobs run expire`` passes: grants handled by each, and their times."""

    handled: list[int] = field(default_factory=list)
    seconds: float = 0.0
    """The processes' wall time, start-up included."""
    cpu_seconds: float = 0.0
    """The processes' CPU time, start-up included."""
    pass_seconds: float = 0.0
    """The passes' own time, as each reports it: the start-up left out."""
    pass_cpu_seconds: float = 0.0
    """The CPU each pass reports it spent (its threads included; the start-up left out)."""


def per_call(calls: Counter[str], grants: int) -> str:
    """Calls by method, per grant: ``DELETE 1.00 + GET 1.00``."""
    return " + ".join(f"{method} {number / grants:.2f}"
                      for method, number in sorted(calls.items())) or "none"


PASS_SUMMARY = re.compile(r"expire: (\d+) handled in ([\d.]+) s \(CPU ([\d.]+) s\)")


def expire_pass(env: dict[str, str], passes: Passes) -> int:
    """One ``jobs run expire``, added to ``passes``; the grants it handled."""
    run = run_cli(env, "jobs", "run", "expire")
    summary = PASS_SUMMARY.search(run.output)
    assert summary is not None, run.output[-2000:]
    count = int(summary[1])
    passes.handled.append(count)
    passes.seconds += run.seconds
    passes.cpu_seconds += run.cpu_seconds
    passes.pass_seconds += float(summary[2])
    passes.pass_cpu_seconds += float(summary[3])
    return count


def sweep_passes(env: dict[str, str], due: int) -> Passes:
    """``jobs run expire`` until the ``due`` grants are handled (or a pass finds none)."""
    passes = Passes()
    while sum(passes.handled) < due:
        if not expire_pass(env, passes):
            passes.handled.pop()
            break
    return passes


def bench_expiry(engine: Engine, database_url: str, row: Row, sizes: list[int], due: int,
                 scale: int, window: timedelta, seed: Callable[[Engine, int], None],
                 clear: Callable[[Engine], None], starts: int) -> float:
    """Returns the seconds a pass with nothing to do takes: the process starting. Then
    ``scale`` grants ending over the coming ``window`` on the largest table, ended by ``serve``
    (:func:`ending_in_serve`).

    Per grant, the bot's CPU is what the passes report they spent, less what a pass with
    nothing due spends: the process's start-up is not in it at all. The same from outside
    (the processes' CPU less a separately measured start-up) is shown beside it."""
    print(f"\n7. Expiry through `jobs run expire`: {due} due; then {scale:,} ending over "
          f"{window.total_seconds():.0f} s in `serve`", flush=True)
    with deployment(engine, database_url) as bot:
        empty = [Passes() for _ in range(starts)]
        for idle in empty:
            expire_pass(bot.env, idle)
        start = statistics.median(idle.seconds for idle in empty)
        start_cpu = statistics.median(idle.cpu_seconds for idle in empty)
        idle_cpu = statistics.median(idle.pass_cpu_seconds for idle in empty)
        row("expiry", "a pass with nothing due: the process (start-up included), wall / CPU; "
            "the pass itself, CPU", f"{start:.2f} / {start_cpu:.2f} s; {idle_cpu * 1000:.0f} ms",
            "")
        first: float | None = None
        for size in sizes:
            seed(engine, size)
            clear(engine)
            insert_due(bot, due, timedelta(minutes=1), datetime.now(UTC))
            assert bot.cluster.bindings(BOT_LABEL) == due
            kube, slack = bot.cluster.requests(), bot.slack.calls()
            passes = sweep_passes(bot.env, due)
            kube, slack = bot.cluster.requests() - kube, bot.slack.calls() - slack
            count = len(passes.handled)
            assert sum(passes.handled) == due, passes.handled
            left = bot.cluster.bindings(BOT_LABEL)
            assert not left, f"{left} bindings of expired grants are still there"
            per_grant = passes.pass_seconds / due
            per_cpu = (passes.pass_cpu_seconds - count * idle_cpu) / due
            outside_cpu = (passes.cpu_seconds - count * start_cpu) / due
            first = first or per_cpu
            row("expiry", f"{due} due among {size:,} rows ({count} passes), per grant: "
                "wall / bot CPU, as the passes report them",
                f"{per_grant * 1000:.2f} / {per_cpu * 1000:.2f} ms", f"{per_cpu / first:.2f}×")
            row("expiry", "  the same from outside: the processes' wall / CPU less a start-up "
                "each", f"{(passes.seconds - count * start) / due * 1000:.1f} / "
                f"{outside_cpu * 1000:.1f} ms", "")
            row("expiry", "  calls per grant: Kubernetes, Slack (each binding deleted, its "
                "approval message updated)", f"{per_call(kube, due)}; {per_call(slack, due)}",
                "")
        clear(engine)
        ending_in_serve(bot, scale, window, sizes[-1], row)
        left = bot.cluster.bindings(BOT_LABEL)
        assert not left, f"{left} bindings of expired grants are still there"
        clear(engine)
    return start


# --- 4. reminders --------------------------------------------------------------------------


def this_minute() -> dict[str, str]:
    """A weekly moment that is now: a job started within the catch-up sends the reminders."""
    now = datetime.now(UTC)
    return {"reminders": f"{now.minute} {now.hour} * * *"}


def bench_reminders(engine: Engine, database_url: str, row: Row, users: int, rate: int,
                    seed: Callable[[Engine, int, datetime], None],
                    clear: Callable[[Engine], None], start: float) -> None:
    """``start``: the seconds a pass takes to start, left out of the time; 0 when the expiry
    section did not measure it: then the median of three passes with nobody to remind."""
    print(f"\n8. `jobs run remind` for {users:,} people under Slack's posting limits", flush=True)
    clear(engine)
    slack = SlackProcess(rate=rate, per_channel=1.0)
    cluster = ClusterProcess()
    folder = Path(tempfile.mkdtemp(prefix="bench-remind-"))
    try:
        env = bot_environment(database_url, slack, cluster, folder, **this_minute())
        if not start:
            start = statistics.median(run_cli(env, "jobs", "run", "remind").seconds
                                      for _ in range(3))
        seed(engine, users, datetime.now(UTC))
        run = run_cli(env, "jobs", "run", "remind")
    finally:
        counts = slack.stop()
        cluster.stop()
        clear(engine)
    review = counts.channel_posts.get("C0REVIEW", 0)
    floor = max((users + review) / rate, float(review))
    took = run.seconds - start
    row("reminders", f"{users:,} DMs + the review ({review} message(s)): each person once, "
        "429s waited out",
        f"{'yes' if counts.dm_counts() == {1: users} else 'NO'}, {counts.limited:,} × 429", "")
    row("reminders", f"floor set by {rate}/s workspace-wide and 1/s per channel",
        f"{floor:.1f} s", "1.00×")
    row("reminders", f"the pass, its start-up ({start:.1f} s) left out; bot CPU",
        f"{took:.1f} s; {run.cpu_seconds:.1f} s", f"{took / floor:.2f}×")


# --- 5. replicas ---------------------------------------------------------------------------


def bench_replicas(engine: Engine, database_url: str, row: Row, count: int, due: int | None,
                   clear: Callable[[Engine], None]) -> None:
    """Acknowledgements of ``count`` mixed requests on one replica, then two; then, unless
    ``due`` is None, the expiry lag of ``due`` grants ending over the coming minute, ended by
    one replica, then two."""
    print("\n9. Two replicas (serve + worker each) on one PostgreSQL", flush=True)
    clear(engine)
    first, second = free_port(), free_port()
    expired: dict[int, list[float]] = {}
    with deployment(engine, database_url) as bot:
        with ExitStack() as running:
            running.enter_context(serve(bot.env, first))
            deny_id = bot.fresh_requests(1, first)[0][0]
            with engine.begin() as connection:
                connection.execute(text("UPDATE access_requests SET reason = 'deny me' "
                                        "WHERE id = :i"), {"i": deny_id})
            extend_id = active_grant_of(bot, ME, first)
            acks: dict[tuple[int, int], list[Sent]] = {}
            for replicas in (1, 2):
                if replicas == 2:
                    pid = running.enter_context(serve(bot.env, second))
                for concurrency in (4, 16):
                    approvable = bot.fresh_requests(count // 4, first)
                    burst = mixed_burst(bot, count, approvable, deny_id, extend_id)
                    acks[replicas, concurrency] = send_all(
                        [endpoint(port) for port in (first, second)[:replicas]], burst.bodies,
                        concurrency)
                    idle(engine)
            for concurrency in (4, 16):
                one = [s.seconds for s in acks[1, concurrency]]
                two = [s.seconds for s in acks[2, concurrency]]
                row("replicas", f"ack x{concurrency}, {count} mixed: one replica, p50 / p99 / "
                    "slowest", spread(one, digits=1) + " ms", "1.00×")
                row("replicas", f"ack x{concurrency}: two replicas taking turns",
                    spread(two, digits=1) + " ms", ratio(two, one))
            row("replicas", "memory of the second replica: serve + its workers",
                memory_label(replica_rss(pid)), "")
            wait_until(lambda: False, 1)  # the last answers on their way
        acks_twice = repeated_audit(engine)
        if due is None:
            row("replicas", "expiry with one replica, then two", "left out of --quick", "")
        for replicas in (1, 2) if due is not None else ():
            clear(engine)
            ending_soon(bot, due or 0, SWEEP, who=f"U0DUE{replicas}X")
            with ExitStack() as sweeping:
                for port in (first, second)[:replicas]:
                    sweeping.enter_context(serve(bot.env, port, jobs=True))
                wait_until(lambda: len(lags(engine)) == due, 300)
                expired[replicas] = lags(engine)
                twice = repeated_audit(engine)
            row("replicas", f"expiry, {due} ending over the coming minute, {replicas} "
                "replica(s) serving: lag p50 / p99 / max; audit events repeated",
                spread(expired[replicas], 1, 2) + f" s; {twice}",
                f"{percentile(expired[replicas], 0.99) / percentile(expired[1], 0.99):.2f}×")
    counts = bot.counts
    assert counts is not None
    told = [times for channel, times in counts.dms.items() if channel.startswith("DU0DUE")]
    row("replicas", "done twice: audit events repeated (acks) / Slack answers repeated / "
        "expiry DMs repeated",
        f"{acks_twice} / {counts.answered_twice} / {sum(t - 1 for t in told)}",
        f"of {len(told)} DMs")
    clear(engine)


# --- 6. memory -----------------------------------------------------------------------------


def settled(serve_pid: int, timeout: float = 20) -> None:
    """Wait until ``serve``'s workers have started and their memory stopped growing."""
    before: list[float] = []

    def steady() -> bool:
        nonlocal before
        try:
            now = replica_rss(serve_pid)
        except RuntimeError:  # no worker yet
            return False
        done = len(now) == len(before) and all(abs(a - b) < 0.5
                                                    for a, b in zip(now, before, strict=True))
        before = now
        time.sleep(0.5)
        return done

    wait_until(steady, timeout)


def bench_memory(engine: Engine, database_url: str, row: Row, users: int,
                 seed: Callable[[Engine, int, datetime], None],
                 clear: Callable[[Engine], None]) -> None:
    """``serve`` with its worker, as deployed, beside a bare Bolt app: resident memory at rest,
    then after the worker's own weekly run has sent ``users`` DMs."""
    print(f"\n10. Memory of serve and its worker, at rest and after {users:,} reminders",
          flush=True)
    clear(engine)
    with deployment(engine, database_url, **this_minute()) as bot:
        port, bare_port = free_port(), free_port()
        with processes(([sys.executable, "-m", "bench.bare_app", str(bare_port),
                         bot.slack.api_url], PYTHONPATH,
                        f"http://127.0.0.1:{bare_port}/healthz"),
                       serving(bot.env, port, jobs=True)) as (bare, rest):  # none to remind
            settled(rest)
            bare_rss = rss_mib(bare)
            at_rest = replica_rss(rest)
        row("memory", "bare Bolt app at rest (waitress, one process)", f"{bare_rss:.0f} MiB",
            "1.00×")
        row("memory", f"serve + its {len(at_rest) - 1} worker(s) at rest", memory_label(at_rest),
            f"{sum(at_rest) / bare_rss:.2f}×")
        seed(engine, users, datetime.now(UTC))
        started = time.monotonic()
        with serve(bot.env, port, jobs=True) as busy:  # its worker sends the reminders at once
            wait_until(lambda: sum(event["method"] == "chat.postMessage" and
                                   str(event["channel"]).startswith("D")
                                   for event in bot.arrived()) >= users, 300)
            seconds = time.monotonic() - started
            after = replica_rss(busy)
        row("memory", f"serve + its worker(s) after their reminder run ({seconds:.0f} s)",
            memory_label(after), f"{sum(after) / bare_rss:.2f}×")
        need = max(sum(at_rest), sum(after))
        request = math.ceil(need * 1.25 / 32) * 32
        row("memory", "suggested per replica (serve and its workers in one container): "
            "requests / limits", f"{request} / {request * 2} MiB", "")
    counts = bot.counts
    assert counts is not None
    row("memory", "every person reminded exactly once by the worker",
        "yes" if counts.dm_counts() == {1: users} else f"NO: {dict(counts.dm_counts())}", "")
    clear(engine)
