"""The audit stream's pure rules, its event format, its configuration and the local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured_event
from pydantic import SecretStr

from bot.adapters.audit_sinks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSink,
    cloud_event,
    shown_url,
    sign,
)
from bot.config import ConfigProblems, Settings, environment_problems, parse_config
from bot.domain.model import AuditEvent
from bot.domain.stream import SinkUnavailable, event_type
from bot.fakes.webhook import WebhookReceiver
from tests.conftest import TEST_CONFIG

EVENT = AuditEvent(id=42, at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC), actor="U0BOB0002",
                   action="approved", request_id=7, details={"comment": "ok"})


@pytest.mark.parametrize(("action", "expected"), [
    ("requested", "com.k8s-access-bot.requested"),
    ("approved", "com.k8s-access-bot.approved"),
    ("approval recorded", "com.k8s-access-bot.approval-recorded"),
    ("grant attempt failed", "com.k8s-access-bot.grant-attempt-failed"),
    ("Handed Over", "com.k8s-access-bot.handed-over"),
    ("gitlab link confirmed", "com.k8s-access-bot.gitlab-link-confirmed"),
    ("  odd//action!! ", "com.k8s-access-bot.odd-action"),
    ("", "com.k8s-access-bot.unknown"),
])
def test_event_type_normalises_the_action(action: str, expected: str) -> None:
    assert event_type(action) == expected


def test_the_cloud_event_carries_the_required_attributes_and_the_audit_row() -> None:
    headers, body = cloud_event(EVENT, "blue")
    assert headers["content-type"] == "application/cloudevents+json"
    parsed = json.loads(body)
    assert parsed == {
        "specversion": "1.0", "id": "42", "source": "/k8s-access-bot/blue",
        "type": "com.k8s-access-bot.approved", "time": "2026-12-01T09:30:00Z",
        "subject": "7", "datacontenttype": "application/json",
        "data": {"id": 42, "at": "2026-12-01T09:30:00+00:00", "actor": "U0BOB0002",
                 "action": "approved", "request_id": 7, "details": {"comment": "ok"}},
    }
    again = from_structured_event(HTTPMessage(headers=headers, body=body))
    assert again.get_id() == "42" and again.get_subject() == "7"
    assert cloud_event(EVENT, "blue")[1] == body  # the same bytes on every delivery


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(b"k", "1700000000", b"{}") == f"v1={expected}"


def test_messages_show_the_url_without_credentials_or_query() -> None:
    assert shown_url("https://user:pw@siem.example:8443/in?token=abc") == \
        "https://siem.example:8443/in"


# --- configuration ----------------------------------------------------------------------


def problems(sinks: list[dict[str, Any]]) -> list[str]:
    try:
        config = parse_config({**TEST_CONFIG, "audit_sinks": sinks}, Path("f.yaml"))
    except ConfigProblems as error:
        return [str(p) for p in error.problems]
    return [str(p) for p in environment_problems(Settings(), config)]


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SIEM_SECRET", "x" * 32)
    yield "SIEM_SECRET"


@pytest.mark.parametrize(("sink", "expected"), [
    ({"type": "webhook", "url": "http://siem.example/in", "secret_env": "SIEM_SECRET"},
     "f.yaml: audit_sinks.0.url = 'http://siem.example/in': audit events leave the machine "
     "signed but readable: write https://… (plain http:// only to localhost)"),
    ({"type": "webhook", "url": "siem.example", "secret_env": "SIEM_SECRET"},
     "f.yaml: audit_sinks.0.url: 'siem.example' is not a URL: write it as https://…"),
    ({"type": "webhook", "url": "https://siem.example:99999/in", "secret_env": "SIEM_SECRET"},
     "f.yaml: audit_sinks.0.url: 'https://siem.example:99999/in' has no valid port: "
     "write https://host/path, or a port from 1 to 65535 (https://host:8443/path)"),
    ({"type": "webhook", "url": "https://siem.example:http/in", "secret_env": "SIEM_SECRET"},
     "f.yaml: audit_sinks.0.url: 'https://siem.example:http/in' has no valid port: "
     "write https://host/path, or a port from 1 to 65535 (https://host:8443/path)"),
    ({"type": "webhook", "url": "https://siem.example/in"},
     "f.yaml: audit_sinks.0: a webhook sink needs 'secret_env' (see audit_sinks in "
     "examples/k8s-access.yaml)"),
    ({"type": "webhook", "url": "https://siem.example/in", "secret_env": "abc-123 secret"},
     "f.yaml: audit_sinks.0.secret_env: 'abc-123 secret' is not an "
     "environment variable name: name the variable that holds the secret (like "
     "AUDIT_WEBHOOK_SECRET), not the secret"),
    ({"type": "file"}, "f.yaml: audit_sinks.0: a file sink needs 'path' (see audit_sinks in "
                       "examples/k8s-access.yaml)"),
    ({"type": "stdout", "path": "/tmp/x"},
     "f.yaml: audit_sinks.0: 'path' is not a field of a stdout sink (see audit_sinks in "
     "examples/k8s-access.yaml)"),
    ({"type": "syslog"}, "f.yaml: audit_sinks.0.type = 'syslog': Input should be 'webhook', "
                         "'file' or 'stdout'"),
])
def test_a_bad_sink_is_named_with_its_field_and_the_fix(secret_env: str, sink: dict[str, Any],
                                                        expected: str) -> None:
    assert problems([sink]) == [expected]


def test_http_to_localhost_is_allowed(secret_env: str) -> None:
    assert problems([{"type": "webhook", "url": "http://127.0.0.1:9000/in",
                      "secret_env": secret_env}, {"type": "stdout"}]) == []


def test_two_sinks_of_one_type_need_names(tmp_path: Path) -> None:
    assert problems([{"type": "stdout"}, {"type": "stdout"}]) == [
        "f.yaml: audit_sinks: two sinks are called stdout: give each a distinct 'name'"]
    assert problems([{"type": "file", "path": str(tmp_path / "a")},
                     {"type": "file", "name": "copy", "path": str(tmp_path / "b")}]) == []


def test_two_sinks_writing_to_one_place_are_refused(tmp_path: Path) -> None:
    same = tmp_path / "audit.jsonl"
    assert problems([{"type": "file", "path": str(same)},
                     {"type": "file", "name": "copy", "path": str(tmp_path / "." / "audit.jsonl")}
                     ]) == [f"f.yaml: audit_sinks: two sinks write to {same}, so each event "
                            "would be written there twice: keep one of them"]
    assert problems([{"type": "stdout"}, {"type": "stdout", "name": "copy"}]) == [
        "f.yaml: audit_sinks: two sinks write to stdout, so each event would be written there "
        "twice: keep one of them"]


def test_a_missing_secret_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIEM_SECRET", raising=False)
    assert problems([{"type": "webhook", "url": "https://siem.example/in",
                      "secret_env": "SIEM_SECRET"}]) == [
        "environment: SIEM_SECRET: not set: audit_sinks.0 (webhook https://siem.example/in) "
        "signs each event with it; set it to a long random secret shared with the receiver "
        "(openssl rand -hex 32)"]


def test_a_file_the_bot_cannot_write_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    found = problems([{"type": "file", "path": str(tmp_path / "nope" / "audit.jsonl")},
                      {"type": "file", "name": "dir", "path": str(tmp_path)},
                      {"type": "file", "name": "locked", "path": str(locked / "a.jsonl")}])
    assert found[0] == (f"f.yaml: audit_sinks.0.path = {tmp_path}/nope/audit.jsonl: its "
                        f"folder {tmp_path}/nope does not exist: create it (in a pod, mount a "
                        "volume there), or give another path")
    assert found[1].endswith("is a folder: give the path of a file (it is created when "
                             "missing)")
    if os.geteuid() != 0:  # root writes anywhere
        assert found[2].endswith(f"the bot may not create files in {locked}: give it write "
                                 "permission (in a pod, a writable volume), or another path")


# --- the local receiver -----------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver("right").start()
    yield server
    server.stop()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_receiver_refuses_what_a_careful_receiver_refuses(
        receiver: WebhookReceiver) -> None:
    headers, body = cloud_event(EVENT, "default")
    now = str(int(datetime.now(UTC).timestamp()))
    signed = {**headers, TIMESTAMP_HEADER: now, SIGNATURE_HEADER: sign(b"right", now, body)}
    assert post(receiver.url, body, {**signed, SIGNATURE_HEADER: sign(b"wrong", now, body)}) \
        == (401, {"error": "X-K8s-Access-Signature does not match"})
    old = str(int(now) - 600)
    assert post(receiver.url, body, {**signed, TIMESTAMP_HEADER: old,
                                     SIGNATURE_HEADER: sign(b"right", old, body)})[0] == 401
    assert post(receiver.url, body, {**signed, "content-type": "application/json"})[0] == 415
    assert post(receiver.url, body + b" ", signed)[0] == 401  # the body was changed
    assert receiver.events == {}
    assert post(receiver.url, body, signed) == (200, {"ok": True})
    assert post(receiver.url, body, signed) == (200, {"ok": True})
    assert receiver.ids() == ["42"] and receiver.duplicates == ["42"]


def test_the_webhook_sink_signs_what_the_receiver_checks(receiver: WebhookReceiver) -> None:
    WebhookSink("siem", receiver.url, SecretStr("right"), "default").send(EVENT)
    assert receiver.ids() == ["42"] and receiver.rejected == []
    wrong = WebhookSink("siem", receiver.url, SecretStr("wrong"), "default")
    with pytest.raises(SinkUnavailable, match=r"answered HTTP 401") as error:
        wrong.send(EVENT)
    assert "wrong" not in error.value.message and "wrong" not in repr(wrong)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_never_a_delivery(receiver: WebhookReceiver,
                                                  status: int) -> None:
    """urllib would follow a 301/302/303 to a POST with a bodiless GET whose 200 looks like
    delivery: the event would be lost."""
    receiver.outage("moved", status=status)
    sink = WebhookSink("siem", receiver.url, SecretStr("right"), "default")
    with pytest.raises(SinkUnavailable, match=rf"answered HTTP {status} .*redirects are not "
                                              r"followed: set url to http://127\.0\.0\.1:\d+/moved"):
        sink.send(EVENT)
    receiver.recover()
    sink.send(EVENT)
    assert receiver.ids() == ["42"]


def test_a_receiver_that_answers_a_byte_at_a_time_is_given_up_on_in_time(
        receiver: WebhookReceiver) -> None:
    """Each byte comes within the socket's timeout, so only a deadline on the whole POST ends
    it: the sink's turn, and the stream's, is never held longer than the timeout."""
    receiver.outage("trickle", delay=0.1)
    sink = WebhookSink("siem", receiver.url, SecretStr("right"), "default", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(SinkUnavailable, match=r"gave no answer within 1s"):
        sink.send(EVENT)
    assert time.monotonic() - started < 2.0
    receiver.recover()
    sink.send(EVENT)
    assert receiver.ids() == ["42"]


def test_a_receiver_that_answers_nothing_in_time_is_named_so(
        receiver: WebhookReceiver) -> None:
    receiver.outage("slow", delay=5)
    sink = WebhookSink("siem", receiver.url, SecretStr("right"), "default", timeout=0.5)
    with pytest.raises(SinkUnavailable, match=r"gave no answer within 0\.5s"):
        sink.send(EVENT)


@pytest.mark.parametrize(("status", "reason"), [
    (400, "Bad Request"), (404, "Not Found"), (410, "Gone"), (413, "Request Entity Too Large"),
    (422, "Unprocessable Entity")])
def test_a_receiver_refusing_the_event_is_a_failure_named_with_its_answer(
        receiver: WebhookReceiver, status: int, reason: str) -> None:
    receiver.outage("error", status=status)
    sink = WebhookSink("siem", receiver.url, SecretStr("right"), "default")
    with pytest.raises(SinkUnavailable, match=rf"answered HTTP {status} {reason}"):
        sink.send(EVENT)


def test_a_webhook_urls_password_and_basic_credentials_are_redacted_from_log_lines() -> None:
    from bot.logs import RedactingFilter

    redact = RedactingFilter().redact
    assert redact("POST https://bot:p%40ss-w0rd@siem.example.com/in failed") \
        == "POST https://bot:[redacted]@siem.example.com/in failed"
    assert "Ym90OnBAc3M" not in redact("headers: Authorization: Basic Ym90OnBAc3M6d29yZA==")
    assert redact("https://siem.example.com:8443/in") == "https://siem.example.com:8443/in"
