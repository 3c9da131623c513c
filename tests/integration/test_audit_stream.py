"""The audit stream end to end: the outbox on SQLite and PostgreSQL, the signed webhook against a
local receiver that checks signatures and drops duplicates, the file and stdout sinks, faults
(a receiver down, erroring, slow; the bot restarted) and three replicas delivering."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from bot.adapters.audit_sinks import WebhookSink
from bot.adapters.db.models import AuditDeliveryRow
from bot.adapters.db.outbox import SqlAlchemyAuditOutbox
from bot.adapters.metrics import PrometheusMetrics
from bot.adapters.web import WebApp
from bot.app import build_context
from bot.config import Config, Settings, parse_config
from bot.domain.stream import AuditStream, StreamMetrics
from bot.fakes.webhook import WebhookReceiver
from bot.jobs import JOBS, default_jobs
from bot.serve import stream_warnings
from bot.services import access, audit_stream, grants
from bot.services.context import Context, audit
from tests.conftest import ALICE, BOB, TEST_CONFIG
from tests.fakes.ports import FakeClock, InMemoryGranter, RecordingNotifier, StaticDirectory

SECRET = "s3cret-shared-with-the-receiver"
H = timedelta(hours=1)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET).start()
    yield server
    server.stop()


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def stream_config(receiver: WebhookReceiver, audit_file: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("AUDIT_WEBHOOK_SECRET", SECRET)
    data: dict[str, Any] = {**TEST_CONFIG, "audit_sinks": [
        {"type": "webhook", "url": receiver.url, "secret_env": "AUDIT_WEBHOOK_SECRET"},
        {"type": "file", "path": str(audit_file)},
    ]}
    return parse_config(data, Path("test.yaml"))


def replica(engine: Engine, config: Config, clock: FakeClock, name: str = "replica-1",
            metrics: Any = None) -> Context:
    """One bot process: its own context (sinks, outbox, sessions) on the shared database."""
    context = build_context(Settings(), config, engine=engine,
                            granters={"staging": InMemoryGranter(), "prod": InMemoryGranter()},
                            notifier=RecordingNotifier(), directory=StaticDirectory(
                                emails={u: f"{u.lower()}@example.com" for u in (ALICE, BOB)}),
                            clock=clock, metrics=metrics)
    return dataclasses.replace(context, worker_id=name)


@pytest.fixture
def sctx(engine: Engine, stream_config: Config, clock: FakeClock) -> Context:
    return replica(engine, stream_config, clock)


def record(ctx: Context, count: int, action: str = "requested") -> None:
    for _ in range(count):
        with ctx.transaction() as uow:
            audit(uow.audit, ctx.clock(), ALICE, action, None, cluster="staging")


def owed(engine: Engine) -> list[tuple[int, str, bool]]:
    with engine.connect() as connection:
        return [(e, s, d is not None) for e, s, d in connection.execute(
            select(AuditDeliveryRow.event_id, AuditDeliveryRow.sink,
                   AuditDeliveryRow.delivered_at).order_by(AuditDeliveryRow.id))]


def with_webhook_timeout(ctx: Context, receiver: WebhookReceiver, timeout: float) -> Context:
    """``ctx`` with its webhook sink giving up on the receiver after ``timeout`` seconds."""
    assert ctx.stream is not None
    webhook = WebhookSink("webhook", receiver.url, _secret(), "default", timeout=timeout)
    return dataclasses.replace(ctx, stream=dataclasses.replace(
        ctx.stream, sinks=[webhook, *ctx.stream.sinks[1:]]))


def file_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()] \
        if path.exists() else []


def event_ids(ctx: Context) -> list[str]:
    with ctx.transaction() as uow:
        return [str(event.id) for event in uow.audit.events()]


def test_every_audit_event_reaches_each_sink_once_as_a_signed_cloud_event(
        sctx: Context, engine: Engine, receiver: WebhookReceiver, audit_file: Path,
        clock: FakeClock) -> None:
    request = access.file_request(sctx, ALICE, "staging", "edit", duration=2 * H,
                                    reason="deploy hotfix")
    assert request.id is not None
    clock.advance(timedelta(minutes=5))
    access.approve(sctx, request.id, BOB, "ok")
    ids = event_ids(sctx)
    assert len(ids) >= 3  # requested, approved, activated
    assert sorted({(s, d) for _, s, d in owed(engine)}) == [("file", False), ("webhook", False)]

    assert audit_stream.deliver(sctx) == 2 * len(ids)

    assert receiver.ids() == ids and receiver.duplicates == [] and receiver.rejected == []
    assert file_ids(audit_file) == ids
    assert all(delivered for _, _, delivered in owed(engine))
    first = receiver.events[ids[0]]
    assert first["specversion"] == "1.0"
    assert first["type"] == "com.k8s-access-bot.requested"
    assert first["source"] == "/k8s-access-bot/default"
    assert first["subject"] == str(request.id)
    assert first["datacontenttype"] == "application/json"
    assert first["time"].endswith("Z")
    assert first["data"]["action"] == "requested" and first["data"]["actor"] == ALICE
    assert first["data"]["id"] == int(ids[0])
    assert json.loads(audit_file.read_text().splitlines()[0]) == first
    assert audit_stream.deliver(sctx) == 0  # nothing twice


def test_outbox_rows_commit_and_roll_back_with_their_audit_event(
        sctx: Context, engine: Engine) -> None:
    with pytest.raises(RuntimeError), sctx.transaction() as uow:
        audit(uow.audit, sctx.clock(), ALICE, "requested", None)
        raise RuntimeError("the use case failed after auditing")
    assert owed(engine) == []
    record(sctx, 1)
    assert [s for _, s, _ in owed(engine)] == ["webhook", "file"]


def test_no_outbox_rows_without_sinks(ctx: Context, engine: Engine) -> None:
    assert ctx.stream is not None and not ctx.stream.sinks
    record(ctx, 2)
    assert owed(engine) == []
    assert audit_stream.deliver(ctx) == 0


@pytest.mark.parametrize("fault", ["down", "error"])
def test_a_receiver_down_gets_every_event_once_it_is_back_and_holds_back_no_other_sink(
        sctx: Context, receiver: WebhookReceiver, audit_file: Path, clock: FakeClock,
        fault: str) -> None:
    receiver.outage(fault)
    record(sctx, 3)
    assert audit_stream.deliver(sctx) == 3  # the file took its three
    assert len(file_ids(audit_file)) == 3
    assert receiver.faulty_answers == 1  # one try, then the sink backs off
    record(sctx, 2)
    assert audit_stream.deliver(sctx) == 2
    clock.advance(timedelta(seconds=1))
    audit_stream.deliver(sctx)
    assert receiver.faulty_answers == 1  # within the back-off nothing is sent

    for _ in range(3):  # back-off grows: 5 s, 10 s, 20 s …
        clock.advance(timedelta(minutes=1))
        assert audit_stream.deliver(sctx) == 0
    assert receiver.faulty_answers == 4
    assert sctx.stream is not None
    backlog = sctx.stream.outbox.backlog(["webhook", "file"])
    assert backlog["webhook"].waiting == 5 and backlog["webhook"].attempts == 4
    assert backlog["file"].waiting == 0
    assert "webhook http://127.0.0.1" in (backlog["webhook"].last_error or "")

    receiver.recover()
    clock.advance(timedelta(minutes=10))
    assert audit_stream.deliver(sctx) == 5
    assert receiver.ids() == event_ids(sctx)
    assert receiver.duplicates == [] and receiver.rejected == []
    assert file_ids(audit_file) == event_ids(sctx)


def test_a_slow_receiver_is_retried_and_keeps_each_event_once(
        sctx: Context, receiver: WebhookReceiver, clock: FakeClock) -> None:
    slow = with_webhook_timeout(sctx, receiver, 0.2)
    receiver.outage("slow", delay=2)
    record(slow, 2)
    assert audit_stream.deliver(slow) == 2  # the file's; the webhook timed out
    receiver.recover()  # the slow answer arrives after the bot gave up: taken, once
    clock.advance(timedelta(minutes=1))
    audit_stream.deliver(slow)
    assert receiver.ids() == event_ids(slow)
    assert set(receiver.duplicates) <= set(receiver.ids())  # repeats were dropped by ID
    assert audit_stream.deliver(slow) == 0


@pytest.mark.parametrize("status", [400, 410, 413])
def test_a_receiver_refusing_events_keeps_them_waiting_until_it_takes_them(
        sctx: Context, receiver: WebhookReceiver, clock: FakeClock, status: int) -> None:
    """A 4xx is a failure like any other (docs/audit-stream.md): nothing is dropped, the
    events wait, named with the receiver's answer, until the receiver is fixed."""
    receiver.outage("error", status=status)
    record(sctx, 2)
    assert audit_stream.deliver(sctx) == 2  # the file's
    clock.advance(timedelta(minutes=10))
    assert audit_stream.deliver(sctx) == 0
    assert sctx.stream is not None
    backlog = sctx.stream.outbox.backlog(["webhook"])["webhook"]
    assert backlog.waiting == 2 and backlog.attempts == 2
    assert f"answered HTTP {status}" in (backlog.last_error or "")
    receiver.recover()
    clock.advance(timedelta(minutes=10))
    assert audit_stream.deliver(sctx) == 2
    assert receiver.ids() == event_ids(sctx)


def test_a_receiver_that_never_finishes_answering_holds_the_stream_no_longer_than_the_timeout(
        sctx: Context, receiver: WebhookReceiver, clock: FakeClock) -> None:
    trickled = with_webhook_timeout(sctx, receiver, 0.5)
    receiver.outage("trickle", delay=0.05)
    record(trickled, 2)
    started = time.monotonic()
    assert audit_stream.deliver(trickled) == 2  # the file's; the webhook gave up in time
    assert time.monotonic() - started < 2.0
    backlog = trickled.stream.outbox.backlog(["webhook"])["webhook"] if trickled.stream \
        else None
    assert backlog is not None and "gave no answer within 0.5s" in (backlog.last_error or "")
    receiver.recover()
    clock.advance(timedelta(minutes=1))
    assert audit_stream.deliver(trickled) == 2
    assert receiver.ids() == event_ids(trickled)


def test_a_restarted_bot_delivers_what_the_stopped_one_left(
        engine: Engine, stream_config: Config, receiver: WebhookReceiver,
        clock: FakeClock) -> None:
    before = replica(engine, stream_config, clock, "old-pod")
    receiver.outage("down")
    record(before, 4)
    audit_stream.deliver(before)
    assert before.stream is not None
    # It dies holding a lease on what it claimed.
    held = before.stream.outbox.claim("webhook", "old-pod", clock(), clock() + timedelta(
        minutes=2), 10)
    assert held == []  # all postponed: nothing is due yet
    clock.advance(timedelta(minutes=1))
    held = before.stream.outbox.claim("webhook", "old-pod", clock(), clock() + timedelta(
        minutes=2), 2)
    assert len(held) == 2
    receiver.recover()

    after = replica(engine, stream_config, clock, "new-pod")
    assert audit_stream.deliver(after) == 2  # the two nobody holds
    clock.advance(timedelta(minutes=3))  # the dead pod's lease runs out
    assert audit_stream.deliver(after) == 2
    # At least once, not in order: what the dead pod held comes after its lease ran out.
    assert sorted(receiver.ids(), key=int) == event_ids(after)
    assert receiver.duplicates == []


def test_three_replicas_deliver_each_event_once(
        engine: Engine, stream_config: Config, receiver: WebhookReceiver, audit_file: Path,
        clock: FakeClock) -> None:
    pods = [replica(engine, stream_config, clock, f"pod-{n}") for n in range(3)]
    writing = threading.Event()
    errors: list[BaseException] = []

    def work(pod: Context) -> None:
        try:
            while not writing.is_set() or _waiting(engine):
                audit_stream.deliver(pod)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(pod,)) for pod in pods]
    for thread in threads:
        thread.start()
    for n in range(30):
        record(pods[n % 3], 1, "approved")
    writing.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    ids = event_ids(pods[0])
    assert len(ids) == 30
    assert sorted(receiver.ids(), key=int) == ids and receiver.duplicates == []
    assert sorted(file_ids(audit_file), key=int) == ids  # each line once


def _waiting(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(
            AuditDeliveryRow.delivered_at.is_(None))).scalar_one())


def test_readyz_and_metrics_name_a_receiver_that_is_behind(
        engine: Engine, stream_config: Config, receiver: WebhookReceiver,
        clock: FakeClock) -> None:
    metrics = PrometheusMetrics()
    assert isinstance(metrics, StreamMetrics)
    pod = replica(engine, stream_config, clock, metrics=metrics)
    metrics.watch_audit_stream(lambda: audit_stream.lag(pod))
    receiver.outage("error", status=502)
    record(pod, 2)
    audit_stream.deliver(pod)
    assert audit_stream.behind(pod) == {}  # just now: not behind yet
    clock.advance(timedelta(minutes=3))
    warning = audit_stream.behind(pod)
    assert list(warning) == ["audit_sink webhook"]
    assert "2 audit events not delivered" in warning["audit_sink webhook"]
    assert "HTTP 502" in warning["audit_sink webhook"]
    body = metrics.render()[0].decode()
    assert 'k8s_access_audit_stream_lag_seconds{sink="webhook"} 180.0' in body
    assert 'k8s_access_audit_stream_lag_seconds{sink="file"} 0.0' in body
    assert 'k8s_access_audit_stream_waiting{sink="webhook"} 2.0' in body
    assert 'k8s_access_audit_stream_failures_total{sink="webhook"} 1.0' in body
    assert 'k8s_access_audit_stream_delivered_total{sink="file"} 2.0' in body
    assert SECRET not in body

    web = WebApp(None, lambda: {}, warnings=lambda: stream_warnings(pod))
    answer = json.loads(b"".join(web({"PATH_INFO": "/readyz", "REQUEST_METHOD": "GET"},
                                     lambda status, headers: None)))
    assert answer["status"] == "ready"
    assert answer["warnings"] == warning

    receiver.recover()
    audit_stream.deliver(pod)  # still backing off
    clock.advance(timedelta(minutes=1))
    audit_stream.deliver(pod)
    assert audit_stream.behind(pod) == {}


def test_the_stdout_sink_writes_one_event_a_line(engine: Engine, clock: FakeClock) -> None:
    from bot.adapters.audit_sinks import StdoutSink

    config = parse_config({**TEST_CONFIG, "audit_sinks": [{"type": "stdout"}]},
                          Path("test.yaml"))
    pod = replica(engine, config, clock)
    out = io.StringIO()
    assert pod.stream is not None
    pod = dataclasses.replace(pod, stream=AuditStream(pod.stream.outbox,
                                                      [StdoutSink("stdout", "default", out)]))
    record(pod, 2, "gitlab link requested")
    assert audit_stream.deliver(pod) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["type"] for line in lines] == ["com.k8s-access-bot.gitlab-link-requested"] * 2
    assert "subject" not in lines[0]


def test_delivered_rows_are_forgotten_after_a_week(sctx: Context, engine: Engine,
                                                    clock: FakeClock) -> None:
    record(sctx, 1)
    audit_stream.deliver(sctx)
    clock.advance(timedelta(days=8))
    audit_stream.deliver(sctx)
    assert owed(engine) == []


def test_rows_owed_to_a_removed_sink_are_forgotten_after_a_week_a_down_sinks_kept(
        sctx: Context, engine: Engine, clock: FakeClock, receiver: WebhookReceiver,
        audit_file: Path) -> None:
    receiver.outage("error")
    record(sctx, 2)
    assert audit_stream.deliver(sctx) == 2  # the file took its two; the webhook backs off
    file_only = replica(engine, parse_config({**TEST_CONFIG, "audit_sinks": [
        {"type": "file", "path": str(audit_file)}]}, Path("test.yaml")), clock)
    clock.advance(timedelta(days=6))
    audit_stream.deliver(file_only)
    assert [(sink, done) for _, sink, done in owed(engine)] == [
        ("webhook", False), ("file", True), ("webhook", False), ("file", True)]

    clock.advance(timedelta(days=2))  # a week since the webhook was last offered anything
    audit_stream.deliver(sctx)  # still configured here: its rows wait, however long it is down
    assert [(sink, done) for _, sink, done in owed(engine)] == [
        ("webhook", False), ("webhook", False)]
    audit_stream.deliver(file_only)  # removed here: what was not offered for a week goes
    assert [(sink, done) for _, sink, done in owed(engine)] == [("webhook", False)]
    clock.advance(timedelta(days=8))  # the row the other replica offered just now, later
    audit_stream.deliver(file_only)
    assert owed(engine) == []
    assert len(event_ids(sctx)) == 2 and len(file_ids(audit_file)) == 2  # the log keeps all


def test_the_stream_is_a_job_that_runs_every_few_seconds(sctx: Context) -> None:
    assert JOBS["stream"] is audit_stream.deliver
    every = {job.name: job.every for job in default_jobs(sctx)}
    assert every["stream"] == timedelta(seconds=5)


def test_grants_go_on_while_a_receiver_is_down(sctx: Context, receiver: WebhookReceiver,
                                               clock: FakeClock) -> None:
    receiver.outage("down")
    request = access.file_request(sctx, ALICE, "staging", "view", duration=H, reason="")
    assert request.id is not None
    assert grants.get(sctx, request.id).state.value == "active"
    assert audit_stream.deliver(sctx) > 0  # the file's


def _secret() -> Any:
    from pydantic import SecretStr

    return SecretStr(SECRET)


def test_the_outbox_claims_due_rows_oldest_first(sctx: Context, engine: Engine,
                                                  clock: FakeClock) -> None:
    record(sctx, 3)
    outbox = SqlAlchemyAuditOutbox(engine)
    now = clock()
    first = outbox.claim("webhook", "a", now, now + H, 2)
    second = outbox.claim("webhook", "b", now, now + H, 5)
    assert [p.event.id for p in first] == sorted(p.event.id for p in first)
    assert len(first) == 2 and len(second) == 1
    assert {p.id for p in first}.isdisjoint(p.id for p in second)
    outbox.release([p.id for p in first], "a")
    assert len(outbox.claim("webhook", "c", now, now + H, 5)) == 2


def test_credentials_in_the_webhook_url_are_sent_as_basic_authentication_never_shown(
        engine: Engine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """``https://user:password@host/…``, as curl reads it: the receiver behind HTTP Basic
    authentication gets every event; the password is in no message about the sink."""
    guarded = WebhookReceiver(SECRET, basic_auth=("bot", "p@ss:word")).start()
    try:
        monkeypatch.setenv("AUDIT_WEBHOOK_SECRET", SECRET)
        url = guarded.url.replace("http://", "http://bot:p%40ss%3Aword@")
        config = parse_config({**TEST_CONFIG, "audit_sinks": [
            {"type": "webhook", "url": url, "secret_env": "AUDIT_WEBHOOK_SECRET"}]},
            Path("test.yaml"))
        pod = replica(engine, config, clock)
        record(pod, 2)
        assert audit_stream.deliver(pod) == 2
        assert guarded.ids() == event_ids(pod) and guarded.rejected == []
        assert pod.stream is not None
        assert "p@ss" not in repr(pod.stream.sinks[0])

        wrong = replica(engine, parse_config({**TEST_CONFIG, "audit_sinks": [
            {"type": "webhook", "url": guarded.url.replace("http://", "http://bot:nope@"),
             "secret_env": "AUDIT_WEBHOOK_SECRET"}]}, Path("test.yaml")), clock)
        record(wrong, 1)
        assert audit_stream.deliver(wrong) == 0
        assert wrong.stream is not None
        error = wrong.stream.outbox.backlog(["webhook"])["webhook"].last_error or ""
        assert "answered HTTP 401" in error and "nope" not in error
    finally:
        guarded.stop()


def test_a_sink_failing_unexpectedly_keeps_its_event_waiting_and_holds_back_no_other_sink(
        sctx: Context, receiver: WebhookReceiver, audit_file: Path, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    assert sctx.stream is not None
    webhook = sctx.stream.sinks[0]
    send = webhook.send
    broken = [ValueError("Port out of range 0-65535")]

    def unexpected(event: Any) -> None:
        if broken:
            raise broken.pop()
        send(event)

    webhook.send = unexpected  # type: ignore[method-assign]
    record(sctx, 2)
    assert audit_stream.deliver(sctx) == 2  # the file's; no traceback out of the pass
    assert file_ids(audit_file) == event_ids(sctx)
    backlog = sctx.stream.outbox.backlog(["webhook"])["webhook"]
    assert backlog.waiting == 2
    assert "failed unexpectedly (ValueError)" in (backlog.last_error or "")
    assert "audit sink webhook failed unexpectedly" in caplog.text
    clock.advance(timedelta(minutes=1))
    assert audit_stream.deliver(sctx) == 2
    assert receiver.ids() == event_ids(sctx)


def test_rows_owed_to_the_last_sink_removed_are_forgotten_after_a_week(
        sctx: Context, engine: Engine, clock: FakeClock) -> None:
    record(sctx, 2)  # owed to the webhook and the file sink, never delivered
    assert len(owed(engine)) == 4
    no_sinks = replica(engine, parse_config({**TEST_CONFIG}, Path("test.yaml")), clock)
    assert no_sinks.stream is not None and not no_sinks.stream.sinks  # every sink removed
    clock.advance(timedelta(days=8))
    JOBS["stream"](no_sinks)  # what `jobs run stream` / the scheduler run
    assert owed(engine) == []


def test_rows_of_removed_sinks_are_looked_for_at_most_hourly(
        sctx: Context, engine: Engine, clock: FakeClock, audit_file: Path) -> None:
    """Finding them reads every row still waiting; the stream runs every few seconds."""
    file_only = replica(engine, parse_config({**TEST_CONFIG, "audit_sinks": [
        {"type": "file", "path": str(audit_file)}]}, Path("test.yaml")), clock)

    def waiting_for_the_webhook() -> int:
        return sum(sink == "webhook" for _, sink, _ in owed(engine))

    record(sctx, 1)
    clock.advance(timedelta(minutes=30))
    record(sctx, 1)
    clock.advance(timedelta(days=7, minutes=-20))  # the first a week old, the second not
    audit_stream.deliver(file_only)
    assert waiting_for_the_webhook() == 1
    clock.advance(timedelta(minutes=30))  # the second a week old now, but looked 30 min ago
    audit_stream.deliver(file_only)
    assert waiting_for_the_webhook() == 1
    clock.advance(timedelta(minutes=30))
    audit_stream.deliver(file_only)
    assert waiting_for_the_webhook() == 0

