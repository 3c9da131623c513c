"""Forged or stale values in buttons, menus and forms, end to end over signed requests: every
action the bot handles, with values its own messages never offer, gets "That button is broken
or out of date; type … instead", changes nothing and logs no traceback."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.adapters.slack import blocks, payloads
from bot.adapters.slack.handling import Handling
from bot.app import SlackRuntime
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.services import grants
from tests.conftest import ADMIN, ALICE, BOB
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, selected, text_input, wait_for

BROKEN = "That button is broken or out of date; type `/k8s-access "
FORGED_IDS = ["abc", "0", "-1", "1.0", "99999999999999999999", "2147483648", '{"id": 1}',
              "[1]", "1; drop table", "#1", " 1", "77"]
"""Values no request button carries: not an ID, out of range, JSON, no such request."""


def _menu_click(driver: Driver, user: str, value: str, block_id: str = "approve_for:1",
                channel: str = APPROVALS_CHANNEL) -> str:
    seen = len(driver.slack.responses)
    payload = {
        "type": "block_actions", "user": {"id": user}, "team": {"id": "T0TEAM"},
        "api_app_id": "A0APP", "trigger_id": "t", "channel": {"id": channel},
        "container": {"type": "message", "channel_id": channel, "message_ts": "1.000001"},
        "message": {"ts": "1.000001"}, "response_url": driver.slack.response_url(),
        "actions": [{"type": "static_select", "action_id": blocks.APPROVE_FOR,
                     "block_id": block_id, "action_ts": "1",
                     "selected_option": {"value": value,
                                         "text": {"type": "plain_text", "text": "x"}}}]}
    driver.dispatch(urlencode({"payload": json.dumps(payload)}))
    return str(wait_for(lambda: driver.slack.responses[seen:])[0]["text"])


@pytest.fixture
def filed(driver: Driver, runtime: SlackRuntime) -> dict[int, State]:
    """#1 staging edit 2h (its approvals in the staging channel), #2 prod view (approvers
    DMed), #3 Alice's active staging view grant."""
    driver.ask(ALICE, "request staging edit 2h fix")
    driver.ask(ALICE, "request prod view 2h fix")
    driver.ask(ALICE, "request staging view 1h")
    wait_for(lambda: grants.get(runtime.ctx, 3).state is State.ACTIVE)
    return states(runtime)


def states(runtime: SlackRuntime) -> dict[int, Any]:
    return {i: (grants.get(runtime.ctx, i).state, len(grants.get(runtime.ctx, i).approvals))
            for i in (1, 2, 3)}


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


BUTTONS = sorted(payloads.REQUEST_ACTIONS)


def test_every_button_and_menu_is_covered(runtime: SlackRuntime) -> None:
    handled = set(Handling(runtime.ctx).by_button) | {blocks.CONFIRM_LINK}
    assert handled == set(BUTTONS) | payloads.CHOICE_ACTIONS | {blocks.CONFIRM_LINK}


@pytest.mark.parametrize("action", BUTTONS)
@pytest.mark.parametrize("value", FORGED_IDS)
def test_a_forged_request_id_in_any_button(driver: Driver, runtime: SlackRuntime,
                                           slack: FakeSlack, filed: dict[int, Any],
                                           caplog: pytest.LogCaptureFixture, action: str,
                                           value: str) -> None:
    for user in (BOB, ALICE):
        answer = driver.press(user, action, value, channel=slack.dm_channel(user))
        assert answer.startswith(BROKEN), answer
        assert "instead." in answer
    assert states(runtime) == filed
    assert slack.called("views.open") == []
    no_traceback(caplog)


@pytest.mark.parametrize("action", BUTTONS)
def test_a_button_whose_block_names_another_request(driver: Driver, runtime: SlackRuntime,
                                                    slack: FakeSlack, filed: dict[int, Any],
                                                    caplog: pytest.LogCaptureFixture,
                                                    action: str) -> None:
    answer = driver.press(BOB, action, "1", block_id=f"{action}:2",
                          channel=slack.dm_channel(BOB))
    assert answer.startswith(BROKEN), answer
    assert states(runtime) == filed
    no_traceback(caplog)


@pytest.mark.parametrize("action", BUTTONS)
def test_another_clusters_request_in_an_approvers_channel(
        driver: Driver, runtime: SlackRuntime, slack: FakeSlack, filed: dict[int, Any],
        caplog: pytest.LogCaptureFixture, action: str) -> None:
    """Bob approves staging and prod; prod's approvals never go to staging's channel."""
    for user in (BOB, ALICE):
        answer = driver.press(user, action, "2", channel=APPROVALS_CHANNEL)
        assert answer.startswith(BROKEN), answer
    assert states(runtime) == filed
    assert slack.called("views.open") == []
    no_traceback(caplog)
    driver.press(BOB, blocks.APPROVE, "2", channel=slack.dm_channel(BOB))  # its own place
    assert len(grants.get(runtime.ctx, 2).approvals) == 1


@pytest.mark.parametrize("value", [
    "1:3h",          # not shorter than asked: never offered
    "1:2h",          # the duration asked
    "1:45m",         # shorter, but not one of the menu's
    "1:zz", "1:", "1", "1:99999999999999999999w", "1:-1h", '1:{"d": 1}',
    "x:1h", ":1h", "99999999999:1h", "77:1h",
    "2:1h",          # another cluster's request, in the staging channel
])
def test_a_forged_approve_for_option(driver: Driver, runtime: SlackRuntime,
                                     filed: dict[int, Any], caplog: pytest.LogCaptureFixture,
                                     value: str) -> None:
    block = f"approve_for:{value.partition(':')[0]}"
    answer = _menu_click(driver, BOB, value, block_id=block)
    assert answer.startswith(BROKEN + "approve"), answer
    assert states(runtime) == filed
    no_traceback(caplog)


def test_an_offered_approve_for_option_still_approves(driver: Driver, runtime: SlackRuntime,
                                                      filed: dict[int, Any]) -> None:
    answer = _menu_click(driver, BOB, "1:1h")
    assert answer.startswith("You approved request #1 for 1h"), answer
    assert _menu_click(driver, BOB, "1:1h", block_id="approve_for:2").startswith(BROKEN)


@pytest.mark.parametrize("value", ["garbage", '{"a": 1}', "", "U0ALICE01; x", "S0SRE0001"])
def test_a_forged_confirm_link(driver: Driver, runtime: SlackRuntime, slack: FakeSlack,
                               caplog: pytest.LogCaptureFixture, value: str) -> None:
    answer = driver.press(ADMIN, blocks.CONFIRM_LINK, value, block_id="link:x",
                          channel=slack.dm_channel(ADMIN))
    assert answer.startswith(BROKEN + "help"), answer
    no_traceback(caplog)


@pytest.mark.parametrize(("callback", "field"), [(blocks.DENY_MODAL, "reason"),
                                                 (blocks.EXTEND_MODAL, "duration")])
@pytest.mark.parametrize("metadata", ["77", "2147483647"])
def test_a_form_about_no_request(driver: Driver, runtime: SlackRuntime,
                                 filed: dict[int, Any], caplog: pytest.LogCaptureFixture,
                                 callback: str, field: str, metadata: str) -> None:
    view = {"type": "modal", "callback_id": callback, "private_metadata": metadata}
    refused = driver.submit(BOB, view, {"reason": text_input("reason", "no"),
                                        "duration": text_input("duration", "1h")})
    assert refused.status == 200, refused.body
    errors = json.loads(refused.body)["errors"]
    assert errors[field].startswith("That form is broken or out of date; type `/k8s-access ")
    assert runtime.inbox.waiting() == 0
    assert states(runtime) == filed
    no_traceback(caplog)


@pytest.mark.parametrize(("values", "field"), [
    ({"cluster": selected("pick_cluster", "nowhere")}, "cluster"),
    ({"cluster": selected("pick_cluster", '{"a": 1}')}, "cluster"),
    ({"role": selected("pick_role", "root")}, "role"),
    ({"namespace": selected("namespace", "kube-system")}, "namespace"),
    ({"duration": text_input("duration", "99999999999999999999h")}, "duration"),
    ({"duration": text_input("duration", '{"h": 1}')}, "duration"),
    ({"start_at": text_input("start_at", '{"at": 1}')}, "start_at"),
])
def test_forged_request_form_values_show_on_their_field(
        driver: Driver, runtime: SlackRuntime, slack: FakeSlack,
        caplog: pytest.LogCaptureFixture, values: dict[str, Any], field: str) -> None:
    view = {"type": "modal", "callback_id": blocks.REQUEST_MODAL, "private_metadata": "{}"}
    chosen = {"cluster": selected("pick_cluster", "staging"),
              "role": selected("pick_role", "deploy"),
              "namespace": selected("namespace", "shop"),
              "duration": text_input("duration", "1h"),
              "reason": text_input("reason", "fix")} | values
    refused = driver.submit(ALICE, view, chosen)
    assert refused.status == 200, refused.body
    assert field in json.loads(refused.body)["errors"]
    time.sleep(0.1)
    assert runtime.inbox.waiting() == 0
    no_traceback(caplog)


@pytest.mark.parametrize("value", ["nowhere", '{"a": 1}', "<!channel>"])
def test_a_forged_pick_in_the_request_form(driver: Driver, runtime: SlackRuntime,
                                           slack: FakeSlack, caplog: pytest.LogCaptureFixture,
                                           value: str) -> None:
    payload = {
        "type": "block_actions", "user": {"id": ALICE}, "team": {"id": "T0TEAM"},
        "api_app_id": "A0APP", "trigger_id": "t",
        "view": {"id": "VMODAL", "type": "modal", "hash": "h",
                 "callback_id": blocks.REQUEST_MODAL, "private_metadata": "{}",
                 "state": {"values": {"cluster": selected("pick_cluster", value)}}},
        "actions": [{"type": "static_select", "action_id": blocks.PICK_CLUSTER,
                     "block_id": "cluster", "action_ts": "1",
                     "selected_option": {"value": value,
                                         "text": {"type": "plain_text", "text": "x"}}}]}
    assert driver.dispatch(urlencode({"payload": json.dumps(payload)})).status == 200
    updated = wait_for(lambda: slack.called("views.update"))[0]["view"]
    assert value not in json.dumps(updated["blocks"])
    no_traceback(caplog)
