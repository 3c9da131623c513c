"""The database down while the acknowledging process keeps what Slack sends: every kind of
request is answered with HTTP 200 and a clear text where the person sees it (never a 500, never
a stack trace), the failure is logged once per request, and ``/readyz`` says not ready."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, create_engine

from bot.adapters.slack import blocks
from bot.adapters.web import WebApp
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings
from bot.domain.errors import DatabaseUnavailable
from bot.fakes.slack import FakeSlack
from bot.serve import readiness
from tests.conftest import ALICE, BOB, ON_POSTGRES
from tests.fakes.ports import FakeClock, InMemoryGranter
from tests.scenario.conftest import Driver, text_input, wait_for

TOLD = DatabaseUnavailable.MESSAGE


@pytest.fixture
def stopped(tmp_path: Path) -> Iterator[Engine]:
    """A database that cannot be reached: a PostgreSQL URL to a closed port, or a SQLite file
    in a directory that does not exist."""
    url = "postgresql+psycopg://postgres@127.0.0.1:9/test" if ON_POSTGRES \
        else f"sqlite:///{tmp_path}/gone/k8s-access.db"
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def down(settings: Settings, slack_config: Config, stopped: Engine, granter: InMemoryGranter,
         clock: FakeClock) -> Iterator[SlackRuntime]:
    runtime = build_slack_runtime(settings, slack_config, http=True, engine=stopped,
                                  granters={"staging": granter, "prod": granter}, clock=clock)
    yield runtime
    runtime.inbox.close()


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def assert_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    [record] = refusals(caplog)
    assert "database is unreachable" in record.getMessage()
    assert record.exc_info is None  # one line, no stack trace


@pytest.mark.parametrize("text", ["help", "request staging view 1h because", "approve 1",
                                  "request"])
def test_a_command_is_told_to_try_again(down: SlackRuntime, slack: FakeSlack, text: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        response = Driver(down, slack).command(ALICE, text)
    assert response.status == 200
    assert response.body == json.dumps({"response_type": "ephemeral", "text": TOLD})
    assert_logged_once(caplog)


@pytest.mark.parametrize("action_id", [blocks.APPROVE, blocks.DENY, blocks.REVOKE])
def test_a_click_is_acknowledged_and_told_to_try_again(
        down: SlackRuntime, slack: FakeSlack, action_id: str,
        caplog: pytest.LogCaptureFixture) -> None:
    seen = len(slack.responses)
    with caplog.at_level(logging.WARNING):
        response = Driver(down, slack).click(BOB, action_id, "1")
        assert response.status == 200
        [told] = wait_for(lambda: slack.responses[seen:])
    assert told["text"] == TOLD and told["response_type"] == "ephemeral"
    assert told.get("replace_original") is False  # the approval message stays
    assert_logged_once(caplog)


def test_a_click_on_the_home_tab_is_told_in_a_dm(down: SlackRuntime, slack: FakeSlack,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert Driver(down, slack).click(ALICE, blocks.REVOKE, "1", home=True).status == 200
        [dm] = wait_for(lambda: slack.dms_to(ALICE))
    assert dm["text"] == TOLD
    assert_logged_once(caplog)


def test_a_form_submission_keeps_what_was_typed_and_shows_why(
        down: SlackRuntime, slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    view = {"type": "modal", "callback_id": blocks.DENY_MODAL, "private_metadata": "1",
            "blocks": [{"type": "section", "block_id": "summary"},
                       {"type": "input", "block_id": "reason"}]}
    with caplog.at_level(logging.WARNING):
        response = Driver(down, slack).submit(BOB, view,
                                              {"reason": text_input("reason", "too broad")})
    assert response.status == 200
    assert response.body == json.dumps({"response_action": "errors",
                                        "errors": {"reason": TOLD}})
    assert_logged_once(caplog)


def test_an_options_request_gets_no_options(down: SlackRuntime, slack: FakeSlack,
                                            caplog: pytest.LogCaptureFixture) -> None:
    payload: dict[str, Any] = {"type": "block_suggestion", "user": {"id": ALICE},
                               "team": {"id": "T0TEAM"}, "api_app_id": "A0APP",
                               "action_id": "namespace", "block_id": "namespace", "value": "ku"}
    with caplog.at_level(logging.WARNING):
        response = Driver(down, slack).dispatch(urlencode({"payload": json.dumps(payload)}))
    assert response.status == 200
    assert response.body == json.dumps({"options": []})
    assert_logged_once(caplog)


def test_readyz_says_the_database_is_down(down: SlackRuntime) -> None:
    statuses: list[str] = []
    app = WebApp(None, readiness(down))
    body = b"".join(app({"PATH_INFO": "/readyz", "REQUEST_METHOD": "GET"},
                        lambda status, headers: statuses.append(status)))
    assert statuses == ["503 Service Unavailable"]
    answer = json.loads(body)
    assert answer["status"] == "not ready" and "database" in answer["failed"]


def test_an_answer_made_after_the_acknowledgement_says_so_too(
        caplog: pytest.LogCaptureFixture) -> None:
    """A form opened after the acknowledgement (Socket Mode keeps nothing first) or a worker
    meeting the database down: the person reads the same text, the log one line."""
    from bot.adapters.slack.handling import Handling

    def reads() -> None:
        raise DatabaseUnavailable("connection refused")

    with caplog.at_level(logging.WARNING):
        answer = Handling.run(ALICE, reads)
    assert answer is not None and TOLD in answer.text
    [record] = refusals(caplog)
    assert record.exc_info is None
