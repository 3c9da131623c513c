"""A running bot: the real Bolt app and Slack adapters, pointed at a local fake Slack, over the
test database, with an in-memory backend. Requests are signed like Slack signs them."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from sqlalchemy import Engine

from bot.adapters.metrics import PrometheusMetrics
from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings, parse_config
from bot.domain.errors import NotFound
from bot.domain.model import State
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers
from bot.services import grants
from tests.conftest import ADMIN, ALICE, APPROVER_GROUP, BOB, CAROL, DAVE, TEST_CONFIG
from tests.fakes.ports import FakeClock, InMemoryGranter

if TYPE_CHECKING:
    from tests.integration.test_leases import GatedGranter

APPROVALS_CHANNEL = "C0APPROVE"


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Listeners finish after their acknowledgement: wait until they have done their part."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(
        users={u: {"email": f"{u.lower()}@example.com", "name": u.lower()}
               for u in (ALICE, BOB, CAROL, DAVE, ADMIN)},
        usergroups={APPROVER_GROUP: [DAVE]},
        channels={APPROVALS_CHANNEL, "C0GENERAL"},
    ).start()
    yield fake
    fake.stop()


@pytest.fixture
def settings(slack: FakeSlack) -> Settings:
    return Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                    slack_api_url=slack.api_url)


def scenario_data() -> dict[str, Any]:
    """The test configuration as the document a config file holds, staging's approvals going
    to :data:`APPROVALS_CHANNEL`: what a scenario changes before it parses it."""
    data: dict[str, Any] = json.loads(json.dumps(TEST_CONFIG))
    data["clusters"]["staging"]["approvers_channel"] = APPROVALS_CHANNEL
    return data


@pytest.fixture
def slack_config(config: Config) -> Config:
    return parse_config(scenario_data(), config.source)


@pytest.fixture
def metrics() -> PrometheusMetrics:
    return PrometheusMetrics()


@pytest.fixture
def runtime(settings: Settings, slack_config: Config, engine: Engine, granter: InMemoryGranter,
            clock: FakeClock, metrics: PrometheusMetrics) -> Iterator[SlackRuntime]:
    """The bot with its worker running, counting into ``metrics``."""
    runtime = build_slack_runtime(settings, slack_config, http=True, engine=engine,
                                  granters={"staging": granter, "prod": granter}, clock=clock,
                                  metrics=metrics)
    worker = runtime.worker().start()
    yield runtime
    worker.stop()  # no listener may outlive its test
    runtime.inbox.close()


@pytest.fixture
def unattended(settings: Settings, slack_config: Config, engine: Engine,
               granter: InMemoryGranter, clock: FakeClock) -> Iterator[SlackRuntime]:
    """A bot that acknowledges with no worker running."""
    runtime = build_slack_runtime(settings, slack_config, http=True, engine=engine,
                                  granters={"staging": granter, "prod": granter}, clock=clock)
    yield runtime
    runtime.inbox.close()


@pytest.fixture
def gated(granter: InMemoryGranter) -> Iterator[GatedGranter]:
    """A backend whose grants wait for ``release`` (set at the end of the test)."""
    from tests.integration.test_leases import GatedGranter  # it imports this module

    gated = GatedGranter(granter)
    yield gated
    gated.release.set()


@dataclass
class Driver:
    """Sends what Slack would send, signed, into the app."""

    runtime: SlackRuntime
    slack: FakeSlack

    def dispatch(self, body: str, content_type: str = "application/x-www-form-urlencoded",
                 **header_changes: Any) -> BoltResponse:
        headers = signed_headers(body, content_type=content_type)
        headers.update(header_changes)
        return self.runtime.app.dispatch(BoltRequest(body=body, headers=headers))

    def command(self, user: str, text: str, channel: str = "C0GENERAL") -> BoltResponse:
        return self.dispatch(command_body(self.slack, user, text, self.slack.response_url(),
                                          channel))

    def ask(self, user: str, text: str) -> dict[str, Any]:
        """Send the command and wait for the bot's answer to it."""
        url = self.slack.response_url()
        response = self.dispatch(command_body(self.slack, user, text, url))
        assert response.status == 200, response.body
        answer: dict[str, Any] = wait_for(lambda: self.slack.responses_to(url))[0]
        return answer

    def press(self, user: str, action_id: str, value: str, **kwargs: Any) -> str:
        """Click and wait for the ephemeral answer to that click."""
        seen = len(self.slack.responses)
        self.click(user, action_id, value, **kwargs)
        return str(wait_for(lambda: self.slack.responses[seen:])[0]["text"])

    def click(self, user: str, action_id: str, value: str, *, channel: str = APPROVALS_CHANNEL,
              ts: str | None = None, home: bool = False,
              block_id: str | None = None) -> BoltResponse:
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user},
            "team": {"id": "T0TEAM"},
            "api_app_id": "A0APP",
            "trigger_id": "trigger-" + value,
            "actions": [{"type": "button", "action_id": action_id,
                         "block_id": block_id or f"b:{value}", "value": value,
                         "action_ts": str(time.time())}],
        }
        if home:
            payload["view"] = {"id": "VHOME", "type": "home", "hash": "h"}
            payload["container"] = {"type": "view", "view_id": "VHOME"}
        else:
            payload["channel"] = {"id": channel}
            payload["container"] = {"type": "message", "channel_id": channel,
                                    "message_ts": ts or "1.000001"}
            payload["message"] = {"ts": ts or "1.000001"}
            payload["response_url"] = self.slack.response_url()
        return self.dispatch(urlencode({"payload": json.dumps(payload)}))

    def submit(self, user: str, view: dict[str, Any],
               values: dict[str, dict[str, Any]]) -> BoltResponse:
        payload = {
            "type": "view_submission",
            "user": {"id": user},
            "team": {"id": "T0TEAM"},
            "api_app_id": "A0APP",
            "view": {**view, "id": "VMODAL", "hash": "h", "state": {"values": values}},
        }
        return self.dispatch(urlencode({"payload": json.dumps(payload)}))

    def event(self, event: dict[str, Any]) -> BoltResponse:
        body = json.dumps({"type": "event_callback", "team_id": "T0TEAM", "api_app_id": "A0APP",
                           "event_id": f"Ev{time.time_ns()}", "event": event})
        return self.dispatch(body, content_type="application/json")


def as_slack_sends(text: str) -> str:
    """``text`` typed in Slack, as Slack sends a slash command's text: its own markup
    (``<@U…>``, ``<#C…>``, ``<!here>``) kept, and ``&``, ``<`` and ``>`` elsewhere as entities."""
    return "".join(
        part if re.fullmatch(r"<[@#!][^<>\s]*>", part)
        else part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        for part in re.split(r"(<[@#!][^<>\s]*>)", text))


def command_body(slack: FakeSlack, user: str, text: str, response_url: str,
                 channel: str = "C0GENERAL") -> str:
    return urlencode({
        "token": "legacy", "team_id": "T0TEAM", "user_id": user, "user_name": user.lower(),
        "channel_id": channel, "command": "/k8s-access", "text": as_slack_sends(text),
        "response_url": response_url, "trigger_id": f"trigger-{time.time_ns()}",
        "api_app_id": "A0APP",
    })


@pytest.fixture
def driver(runtime: SlackRuntime, slack: FakeSlack) -> Driver:
    return Driver(runtime, slack)


def state_of(runtime: SlackRuntime, request_id: int) -> State | None:
    """The request's state as stored; None when there is no such request."""
    try:
        return grants.get(runtime.ctx, request_id).state
    except NotFound:
        return None


def approval_message(slack: FakeSlack, index: int = 0) -> tuple[str, dict[str, Any]]:
    """The ``index``-th message posted in the approvers' channel (waited for): its ``ts`` and
    the message as it stands now."""
    posted = wait_for(lambda: [m for m in slack.called("chat.postMessage")
                               if m["channel"] == APPROVALS_CHANNEL][index:])
    ts = wait_for(lambda: [ts for (c, ts) in slack.messages if c == APPROVALS_CHANNEL]
                  [index:])[0]
    assert posted
    return ts, slack.message(APPROVALS_CHANNEL, ts)


def text_input(action_id: str, value: str) -> dict[str, Any]:
    return {action_id: {"type": "plain_text_input", "value": value}}


def selected(action_id: str, value: str | None) -> dict[str, Any]:
    option = {"text": {"type": "plain_text", "text": value}, "value": value} if value else None
    return {action_id: {"type": "static_select", "selected_option": option}}


__all__ = ["ADMIN", "ALICE", "BOB", "CAROL", "DAVE", "Driver", "approval_message", "scenario_data",
           "selected", "state_of", "text_input", "wait_for"]
