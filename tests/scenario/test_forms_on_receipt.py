"""Forms open while Slack's ``trigger_id`` is valid, whatever the worker is doing: the request
form, the Deny form and the Extend form are opened by the acknowledging app, right after the
ack, with no worker running or the only one busy. Such a request is never kept for a worker
(no second open), its signature is (a replay is refused), and the rules on who may open a
Deny or Extend form are the domain's, told at the click."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from sqlalchemy import Engine

from bot.app import SlackRuntime, build_slack_runtime
from bot.config import Config, Settings
from bot.domain.model import State
from bot.fakes.slack import APP_TOKEN, FakeSlack, signed_headers
from bot.fakes.socket_mode import FakeSocketMode
from bot.services import grants
from tests.conftest import ADMIN, ALICE, BOB, CAROL
from tests.fakes.ports import FakeClock, InMemoryGranter
from tests.integration.test_leases import GatedGranter
from tests.scenario.conftest import Driver, command_body, wait_for
from tests.scenario.test_inbox import rows


def opened(slack: FakeSlack) -> list[str]:
    """The callback IDs of the forms Slack was asked to open, in order."""
    return [call["view"]["callback_id"] for call in slack.called("views.open")]


def filed_with_a_worker(runtime: SlackRuntime, driver: Driver) -> None:
    """#1: Alice's staging/edit, waiting for Bob; #2: her staging/view, active. Then no worker
    runs."""
    worker = runtime.worker().start()
    try:
        assert driver.ask(ALICE, "request staging edit 1h fix")["text"].startswith("Request #1")
        driver.ask(ALICE, "request staging view 1h")
        wait_for(lambda: grants.get(runtime.ctx, 2).state is State.ACTIVE)
        wait_for(lambda: runtime.inbox.waiting() == 0)
    finally:
        worker.stop()


# --- HTTP, no worker ----------------------------------------------------------------------


def test_an_incomplete_request_opens_its_form_with_no_worker(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine) -> None:
    driver = Driver(unattended, slack)
    body = command_body(slack, ALICE, "request staging deploy 2h", slack.response_url())
    headers = signed_headers(body)
    acknowledged = driver.dispatch(body, **headers)
    assert (acknowledged.status, acknowledged.body) == (200, "")
    [modal] = wait_for(lambda: slack.called("views.open"))
    assert modal["trigger_id"].startswith("trigger-")
    view = modal["view"]
    assert view["callback_id"] == "request_modal"
    assert json.loads(view["private_metadata"])["role"] == "deploy"
    assert view["blocks"][3]["element"]["initial_value"] == "2h"
    # Nothing for a worker: only the signature is kept, done, and its replay is refused.
    assert unattended.inbox.waiting() == 0
    assert rows(engine) == [(0, True, False)]
    assert driver.dispatch(body, **headers).status == 401
    assert len(slack.called("views.open")) == 1


def test_a_request_that_needs_work_is_still_kept_once(
        unattended: SlackRuntime, slack: FakeSlack, engine: Engine) -> None:
    driver = Driver(unattended, slack)
    for text in ("request staging edit 1h fix", "request nowhere", "request staging edit x 1h"):
        assert driver.command(ALICE, text).status == 200
    assert unattended.inbox.waiting() == 3
    assert rows(engine) == [(0, False, True)] * 3
    assert slack.called("views.open") == []


def test_deny_and_extend_forms_open_for_those_who_may_with_no_worker(
        unattended: SlackRuntime, slack: FakeSlack) -> None:
    driver = Driver(unattended, slack)
    filed_with_a_worker(unattended, driver)
    for user, says in [(CAROL, "You are not an approver"),
                       (ALICE, "You cannot deny your own request #1"),
                       ("U0STRANGE", "You are not an approver")]:
        assert says in driver.press(user, "deny", "1")
    for user in (BOB, CAROL, ADMIN):
        assert driver.press(user, "extend", "2", channel=slack.dm_channel(user)) == \
            "Only the grantee can extend request #2."
    assert slack.called("views.open") == []

    assert driver.click(BOB, "deny", "1").status == 200
    wait_for(lambda: opened(slack) == ["deny_modal"])
    assert driver.click(ALICE, "extend", "2", channel=slack.dm_channel(ALICE)).status == 200
    wait_for(lambda: opened(slack) == ["deny_modal", "extend_modal"])
    [deny, extend] = slack.called("views.open")
    assert (deny["trigger_id"], deny["view"]["private_metadata"]) == ("trigger-1", "1")
    assert (extend["trigger_id"], extend["view"]["private_metadata"]) == ("trigger-2", "2")
    assert unattended.inbox.waiting() == 0
    assert grants.get(unattended.ctx, 1).state is State.PENDING


def test_a_form_slack_will_not_open_is_answered_with_the_command_with_no_worker(
        unattended: SlackRuntime, slack: FakeSlack) -> None:
    driver = Driver(unattended, slack)
    filed_with_a_worker(unattended, driver)
    slack.fail("views.open", "expired_trigger_id")
    answer = driver.ask(ALICE, "request staging deploy 2h")["text"]
    assert "expired_trigger_id" in answer
    assert "`/k8s-access request staging deploy 2h REASON…`" in answer
    assert "`/k8s-access deny 1 REASON`" in driver.press(BOB, "deny", "1")
    answer = driver.press(ALICE, "extend", "2", channel=slack.dm_channel(ALICE))
    assert "`/k8s-access extend 2 DURATION [REASON]`" in answer
    assert unattended.inbox.waiting() == 0


# --- HTTP, the only worker thread busy ----------------------------------------------------


@pytest.fixture
def busy(settings: Settings, slack_config: Config, engine: Engine, granter: InMemoryGranter,
         gated: GatedGranter, clock: FakeClock) -> Iterator[SlackRuntime]:
    """A bot whose worker has one thread; prod's grants wait on ``gated``."""
    runtime = build_slack_runtime(settings, slack_config, http=True, engine=engine,
                                  granters={"staging": granter, "prod": gated}, clock=clock)
    worker = runtime.worker(threads=1).start()
    yield runtime
    gated.release.set()
    worker.stop()
    runtime.inbox.close()


def test_forms_open_while_the_worker_is_busy(busy: SlackRuntime, slack: FakeSlack,
                                             gated: GatedGranter) -> None:
    driver = Driver(busy, slack)
    driver.ask(ALICE, "request staging edit 1h fix")
    driver.ask(ALICE, "request staging view 1h")
    wait_for(lambda: grants.get(busy.ctx, 2).state is State.ACTIVE)
    driver.command(CAROL, "request prod admin 1h --break-glass outage")  # the grant hangs
    assert gated.answered.wait(10)
    driver.command(ALICE, "whoami")
    assert busy.inbox.waiting() == 2  # the break-glass request, and whoami: not taken

    driver.command(ALICE, "request staging")
    driver.click(BOB, "deny", "1")
    driver.click(ALICE, "extend", "2", channel=slack.dm_channel(ALICE))
    wait_for(lambda: sorted(opened(slack)) == ["deny_modal", "extend_modal", "request_modal"])
    assert busy.inbox.waiting() == 2

    gated.release.set()
    wait_for(lambda: busy.inbox.waiting() == 0)
    assert len(opened(slack)) == 3


# --- Socket Mode, no worker ---------------------------------------------------------------


@pytest.fixture
def socket_mode(slack: FakeSlack) -> Iterator[FakeSocketMode]:
    fake = FakeSocketMode()
    slack.socket_url = fake.url
    yield fake
    fake.stop()


@pytest.fixture
def socket_bot(settings: Settings, slack_config: Config, engine: Engine,
               granter: InMemoryGranter, clock: FakeClock,
               socket_mode: FakeSocketMode) -> Iterator[SlackRuntime]:
    """A bot in Socket Mode with no worker running."""
    runtime = build_slack_runtime(settings, slack_config, http=False, engine=engine,
                                  granters={"staging": granter, "prod": granter}, clock=clock)
    handler = SocketModeHandler(runtime.app, APP_TOKEN, web_client=runtime.client)
    handler.connect()  # type: ignore[no-untyped-call]
    assert socket_mode.connected.wait(10)
    yield runtime
    handler.close()  # type: ignore[no-untyped-call]
    runtime.inbox.close()


def click(user: str, action_id: str, value: str, channel: str) -> dict[str, Any]:
    return {"type": "block_actions", "user": {"id": user}, "team": {"id": "T0TEAM"},
            "api_app_id": "A0APP", "trigger_id": f"trigger-{value}", "channel": {"id": channel},
            "container": {"type": "message", "channel_id": channel, "message_ts": "1.000001"},
            "actions": [{"type": "button", "action_id": action_id, "block_id": f"b:{value}",
                         "value": value, "action_ts": str(time.time())}]}


def command(user: str, text: str, response_url: str) -> dict[str, Any]:
    return {"command": "/k8s-access", "text": text, "user_id": user, "team_id": "T0TEAM",
            "channel_id": "C0GENERAL", "response_url": response_url,
            "trigger_id": f"trigger-{time.time_ns()}", "api_app_id": "A0APP"}


def test_forms_open_in_socket_mode_with_no_worker(
        socket_bot: SlackRuntime, socket_mode: FakeSocketMode, slack: FakeSlack) -> None:
    filed_with_a_worker(socket_bot, Driver(socket_bot, slack))
    envelopes = [
        socket_mode.push("slash_commands", command(ALICE, "request prod", slack.response_url())),
        socket_mode.push("interactive", click(BOB, "deny", "1", "C0APPROVE")),
        socket_mode.push("interactive", click(ALICE, "extend", "2", slack.dm_channel(ALICE))),
    ]
    wait_for(lambda: all(socket_mode.acked(e) for e in envelopes))
    wait_for(lambda: sorted(opened(slack)) == ["deny_modal", "extend_modal", "request_modal"])
    assert socket_bot.inbox.waiting() == 0

    refused = slack.response_url()
    socket_mode.push("interactive", {**click(CAROL, "deny", "1", "C0APPROVE"),
                                     "response_url": refused})
    assert "You are not an approver" in wait_for(lambda: slack.responses_to(refused))[0]["text"]
    needs_work = socket_mode.push("slash_commands",
                                  command(ALICE, "whoami", slack.response_url()))
    wait_for(lambda: socket_mode.acked(needs_work))
    assert socket_bot.inbox.waiting() == 1
    assert len(opened(slack)) == 3
