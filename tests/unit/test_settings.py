"""The settings groups: schedules from the file, tuning from the environment, each read once,
with defaults, overrides and a problem per bad value that names the variable and the fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import (
    Batches,
    Concurrency,
    ConfigProblems,
    RetryPolicy,
    Schedules,
    SlackTuning,
    Tuning,
    UserMapping,
    load_settings,
    parse_config,
)
from tests.conftest import TEST_CONFIG

TUNING_VARIABLES = (
    "OPERATION_LEASE_SECONDS", "OPERATION_HEARTBEAT_SECONDS", "OPERATION_SLOW_AFTER_SECONDS",
    "RETRY_FIRST_DELAY_SECONDS", "RETRY_MAX_DELAY_SECONDS", "GRANT_ATTEMPTS",
    "BACKEND_CONCURRENCY", "SEND_CONCURRENCY", "WORKER_THREADS", "WEB_THREADS",
    "WORKER_POLL_SECONDS", "SLACK_INBOX_LEASE_SECONDS", "SLACK_RATE_LIMIT_RETRIES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TUNING_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_what_the_bot_always_did() -> None:
    settings = load_settings()
    assert settings.retry == RetryPolicy(
        first_delay=timedelta(seconds=30), max_delay=timedelta(hours=1), grant_attempts=8,
        lease=timedelta(seconds=45), heartbeat=timedelta(seconds=15),
        slow_after=timedelta(seconds=30), jitter=0.2)
    assert settings.tuning == Tuning(
        concurrency=Concurrency(backend_calls=8, messages=8, slack_requests=8, web_requests=8),
        slack=SlackTuning(poll=timedelta(seconds=1), inbox_lease=timedelta(minutes=10),
                          rate_limit_retries=10),
        batches=Batches(expire=500, operations=100, timeouts=500, nudges=1000, renotify=1000))


def test_groups_are_built_once_and_frozen() -> None:
    settings = load_settings()
    assert settings.tuning is settings.tuning and settings.retry is settings.retry
    with pytest.raises(AttributeError):
        settings.tuning.concurrency.backend_calls = 1  # type: ignore[misc]


@pytest.mark.parametrize(("variable", "value", "read"), [
    ("OPERATION_LEASE_SECONDS", "90", lambda s: s.retry.lease == timedelta(seconds=90)),
    ("OPERATION_HEARTBEAT_SECONDS", "5", lambda s: s.retry.heartbeat == timedelta(seconds=5)),
    ("OPERATION_SLOW_AFTER_SECONDS", "2.5",
     lambda s: s.retry.slow_after == timedelta(seconds=2.5)),
    ("RETRY_FIRST_DELAY_SECONDS", "10", lambda s: s.retry.first_delay == timedelta(seconds=10)),
    ("RETRY_MAX_DELAY_SECONDS", "600", lambda s: s.retry.max_delay == timedelta(minutes=10)),
    ("GRANT_ATTEMPTS", "3", lambda s: s.retry.grant_attempts == 3),
    ("BACKEND_CONCURRENCY", "2", lambda s: s.tuning.concurrency.backend_calls == 2),
    ("SEND_CONCURRENCY", "4", lambda s: s.tuning.concurrency.messages == 4),
    ("WORKER_THREADS", "16", lambda s: s.tuning.concurrency.slack_requests == 16),
    ("WEB_THREADS", "12", lambda s: s.tuning.concurrency.web_requests == 12),
    ("WORKER_POLL_SECONDS", "0.5", lambda s: s.tuning.slack.poll == timedelta(seconds=0.5)),
    ("SLACK_INBOX_LEASE_SECONDS", "300",
     lambda s: s.tuning.slack.inbox_lease == timedelta(minutes=5)),
    ("SLACK_RATE_LIMIT_RETRIES", "0", lambda s: s.tuning.slack.rate_limit_retries == 0),
])
def test_each_variable_sets_its_knob(monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
                                      read: Any) -> None:
    monkeypatch.setenv(variable, value)
    assert read(load_settings())


@pytest.mark.parametrize(("environment", "problem"), [
    ({"OPERATION_LEASE_SECONDS": "0"},
     "environment: OPERATION_LEASE_SECONDS = 0: must be more than 0: write a number of seconds, "
     "like 30"),
    ({"WORKER_POLL_SECONDS": "soon"},
     "environment: WORKER_POLL_SECONDS = soon: must be a number of seconds, like 30"),
    ({"WORKER_THREADS": "many"}, "environment: WORKER_THREADS = many: must be a whole number"),
    ({"GRANT_ATTEMPTS": "0"},
     "environment: GRANT_ATTEMPTS = 0: must be at least 1: write a whole number"),
    ({"SLACK_RATE_LIMIT_RETRIES": "-1"},
     "environment: SLACK_RATE_LIMIT_RETRIES = -1: must be at least 0: write a whole number"),
    ({"OPERATION_HEARTBEAT_SECONDS": "31"},
     "environment: OPERATION_HEARTBEAT_SECONDS = 31: renew at most every half lease "
     "(OPERATION_LEASE_SECONDS=45), so that one late renewal does not lose it; got 31"),
    ({"RETRY_FIRST_DELAY_SECONDS": "60", "RETRY_MAX_DELAY_SECONDS": "10"},
     "environment: RETRY_MAX_DELAY_SECONDS = 10: the longest wait cannot be shorter than the "
     "first (RETRY_FIRST_DELAY_SECONDS=60)"),
    ({"LOG_FORMAT": "xml"}, "environment: LOG_FORMAT = xml: must be 'json' or 'console'"),
    ({"LOG_LEVEL": "LOUD"}, "environment: LOG_LEVEL: 'LOUD' is not a log level: write DEBUG, "
                            "INFO, WARNING, ERROR or CRITICAL"),
])
def test_a_bad_value_is_one_problem_with_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                 environment: dict[str, str],
                                                 problem: str) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigProblems) as error:
        load_settings()
    assert [str(p) for p in error.value.problems] == [problem]


def test_every_bad_variable_is_listed_at_once_and_secrets_are_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://bot:s3cret@db/k8s")
    monkeypatch.setenv("WORKER_THREADS", "0")
    monkeypatch.setenv("BACKEND_CONCURRENCY", "lots")
    with pytest.raises(ConfigProblems) as error:
        load_settings()
    assert [(p.source, p.field) for p in error.value.problems] == [
        ("environment", "DATABASE_URL"), ("environment", "BACKEND_CONCURRENCY"),
        ("environment", "WORKER_THREADS")]
    assert "s3cret" not in str(error.value)
    assert error.value.problems[0].value is None


def config_with(**top: Any) -> Any:
    return parse_config({**TEST_CONFIG, **top}, Path("test.yaml"))


def test_schedules_default_when_the_file_says_nothing() -> None:
    schedules = config_with().schedules
    assert schedules == Schedules(timezone="UTC", reminders="0 9 * * MON",
                                  expiry_sweep=timedelta(minutes=1),
                                  nudge_before=timedelta(hours=1),
                                  renotify_after=timedelta(hours=4))
    assert schedules.reconcile_every == timedelta(minutes=10)
    assert schedules.inbox_forget_every == timedelta(minutes=5)


def test_schedules_come_from_the_file() -> None:
    schedules = config_with(schedules={
        "timezone": "Europe/Berlin", "reminders": "30 8 * * FRI", "expiry_sweep": "5m",
        "nudge_before": "2h", "renotify_after": "1h"}).schedules
    assert (schedules.timezone, schedules.reminders) == ("Europe/Berlin", "30 8 * * FRI")
    assert (schedules.expiry_sweep, schedules.nudge_before, schedules.renotify_after) == (
        timedelta(minutes=5), timedelta(hours=2), timedelta(hours=1))
    assert schedules.reconcile_every == timedelta(minutes=50)
    assert schedules.inbox_forget_every == timedelta(minutes=25)


@pytest.mark.parametrize(("schedules", "problem"), [
    ({"expiry_sweep": "soon"}, "test.yaml: schedules.expiry_sweep: 'soon' is not a duration: "
                               "write it like 90m"),
    ({"nudge_before": 60}, "test.yaml: schedules.nudge_before: write durations with a unit, "
                           "like '60m' or '60h'"),
    ({"renotify_after": 0.5}, "test.yaml: schedules.renotify_after = 0.5: write durations "
                              "with a unit and whole numbers, like 90m"),
    ({"renotify_after": ["4h"]}, "test.yaml: schedules.renotify_after: is not a duration: "
                                 "write it like 90m"),
    ({"timezone": "Mars/Olympus"}, "test.yaml: schedules.timezone: 'Mars/Olympus' is not a "
                                   "time zone, like 'UTC' or 'Europe/Berlin'"),
    ({"every": "1m"}, "test.yaml: schedules.every = '1m': unknown field"),
])
def test_bad_schedules_name_the_field(schedules: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigProblems) as error:
        config_with(schedules=schedules)
    assert next(str(p) for p in error.value.problems if p.field.startswith("schedules")) \
        .startswith(problem)


def test_user_mappings_through_the_accessor() -> None:
    config = config_with(users={"U0ALICE01": {"gitlab": "alice", "email": "a@example.com"}})
    assert config.user("U0ALICE01") == UserMapping(gitlab="alice", email="a@example.com")
    assert config.user("U0NOBODY1") is None


def test_the_context_carries_the_groups_as_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.adapters.db.engine import make_engine
    from bot.app import build_context

    monkeypatch.setenv("BACKEND_CONCURRENCY", "3")
    monkeypatch.setenv("OPERATION_LEASE_SECONDS", "60")
    settings = load_settings()
    ctx = build_context(settings, config_with(), engine=make_engine("sqlite://"),
                        granters={})
    assert ctx.tuning is settings.tuning and ctx.tuning.concurrency.backend_calls == 3
    assert ctx.retry is settings.retry and ctx.retry.lease == timedelta(seconds=60)


def test_the_slack_client_waits_out_as_many_429s_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.adapters.slack.client import CountingRateLimitHandler, make_client

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_RATE_LIMIT_RETRIES", "2")
    handlers = make_client(load_settings()).retry_handlers
    limits = [h for h in handlers if isinstance(h, CountingRateLimitHandler)]
    assert [h.max_retry_count for h in limits] == [2]


@pytest.mark.parametrize("said", ["1e300", "inf", "nan", "-5", "Wed, 21 Oct 2015 07:28:00 GMT",
                                  "Wed, 21 Oct 9999 07:28:00 GMT", "soon"])
def test_any_retry_after_a_service_says_gives_a_bounded_delay(said: str) -> None:
    """A Retry-After read from any service (huge, infinite, not a number, a date long gone or
    far off) waits between nothing and ``max_delay``, never overflowing a timedelta."""
    from bot.adapters.waits import asked_wait
    policy = RetryPolicy(jitter=0)
    wait = asked_wait({"Retry-After": said})
    assert wait is None or wait >= 0
    assert timedelta(0) < policy.delay(1, wait) <= policy.max_delay
