"""The Slack inbox between the acknowledging app and the worker: nothing acknowledged is lost
when no worker runs or a worker dies, a replay is refused on every replica, and old keys go."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from bot.adapters.slack.inbox import LEASE, MAX_ATTEMPTS, REPLAY_WINDOW
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings
from bot.fakes.slack import FakeSlack, signed_headers
from tests.conftest import ALICE, ON_POSTGRES
from tests.fakes.ports import FakeClock, InMemoryGranter
from tests.scenario.conftest import Driver, command_body, wait_for


def rows(engine: Engine) -> list[tuple[int, bool, bool]]:
    """(attempts, done, body kept) of each inbox row."""
    with engine.connect() as connection:
        return [(attempts, done is not None, body is not None) for attempts, done, body in
                connection.execute(text("SELECT attempts, done_at, body FROM slack_inbox"))]


def test_what_was_acknowledged_without_a_worker_is_answered_when_one_starts(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine) -> None:
    url = slack.response_url()
    response = Driver(unattended, slack).dispatch(command_body(slack, ALICE, "help", url))
    assert response.status == 200
    assert rows(engine) == [(0, False, True)]
    assert not slack.responses_to(url)
    worker = unattended.worker().start()
    try:
        answer = wait_for(lambda: slack.responses_to(url))
    finally:
        worker.stop()
    assert "request" in answer[0]["text"]
    assert rows(engine) == [(1, True, False)]  # done; the body (a response URL) is gone


def test_a_dead_workers_request_runs_again_after_its_lease_then_is_given_up(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine, clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    url = slack.response_url()
    Driver(unattended, slack).dispatch(command_body(slack, ALICE, "whoami", url))
    inbox = unattended.inbox
    assert len(inbox.claim("dies-before-answering", 8)) == 1
    assert inbox.claim("another", 8) == []  # leased
    for attempt in range(2, MAX_ATTEMPTS + 1):
        clock.advance(LEASE + timedelta(seconds=1))
        [again] = inbox.claim("another", 8)
        assert again.attempts == attempt
    assert inbox.waiting() == 1
    clock.advance(LEASE + timedelta(seconds=1))
    worker = unattended.worker()
    with caplog.at_level(logging.ERROR):
        worker.start()
        wait_for(lambda: inbox.waiting() == 0)
        worker.stop()
    assert f"gave up on a Slack request after {MAX_ATTEMPTS} attempts" in caplog.text
    assert not slack.responses_to(url)
    assert rows(engine) == [(MAX_ATTEMPTS + 1, True, False)]


def test_a_replay_is_refused_by_another_replica(
        unattended: SlackRuntime, settings: Settings, slack_config: Config, engine: Engine,
        granter: InMemoryGranter, clock: FakeClock, slack: FakeSlack) -> None:
    other = build_slack_runtime(settings, slack_config, http=True, engine=engine,
                                granters={"staging": granter, "prod": granter}, clock=clock)
    body = command_body(slack, ALICE, "request staging view 1h", slack.response_url())
    headers = signed_headers(body)
    try:
        assert Driver(unattended, slack).dispatch(body, **headers).status == 200
        assert Driver(other, slack).dispatch(body, **headers).status == 401
    finally:
        other.inbox.close()
    assert len(rows(engine)) == 1


def test_keys_are_forgotten_once_done_and_past_the_replay_window(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine, clock: FakeClock) -> None:
    driver = Driver(unattended, slack)
    for text_ in ("help", "whoami"):
        driver.dispatch(command_body(slack, ALICE, text_, slack.response_url()))
    inbox = unattended.inbox
    [first, _] = inbox.claim("worker", 8)
    inbox.done(first.key)
    clock.advance(REPLAY_WINDOW + timedelta(seconds=1))
    assert inbox.forget() == 1  # the undone one stays, however old
    assert inbox.waiting() == 1
    assert rows(engine) == [(1, False, True)]


@pytest.mark.skipif(not ON_POSTGRES, reason="the acknowledgement's own connections: PostgreSQL")
def test_acknowledgements_survive_the_database_dropping_their_connections(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine) -> None:
    driver = Driver(unattended, slack)
    assert driver.dispatch(command_body(slack, ALICE, "help", slack.response_url())).status == 200
    with engine.connect() as connection:  # as a restart or a failover would
        dropped = connection.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
    assert dropped >= 1
    assert driver.dispatch(command_body(slack, ALICE, "whoami",
                                        slack.response_url())).status == 200
    assert rows(engine) == [(0, False, True), (0, False, True)]
