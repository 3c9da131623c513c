"""Who may ask, for whom, for how long, with which ticket, and asking again: signed Slack
requests into the real app, against the local Slack, over the test database."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.app import SlackRuntime
from bot.config import Config, parse_config
from bot.domain.model import AuditEvent, State
from bot.fakes.slack import FakeSlack
from bot.services import grants
from tests.conftest import ADMIN, ALICE, APPROVER_GROUP, BOB, CAROL, DAVE
from tests.fakes.ports import FakeClock, InMemoryGranter
from tests.scenario.conftest import (
    APPROVALS_CHANNEL,
    Driver,
    approval_message,
    scenario_data,
    selected,
    state_of,
    text_input,
    wait_for,
)

JIRA = "https://jira.example.com/browse/{ticket}"
HINT = "name the ticket, like OPS-123"


@pytest.fixture
def slack_config(config: Config) -> Config:
    data = scenario_data()
    staging = data["clusters"]["staging"]
    staging["roles"]["secrets"] = {
        "cluster_role": "view", "requesters": [CAROL, APPROVER_GROUP],
        "reason_pattern": "[A-Z]+-[0-9]+", "reason_hint": HINT, "ticket_url": JIRA}
    staging["roles"]["logs"] = {"cluster_role": "view", "request_for_others": True}
    staging["roles"]["tenants"] = {  # more namespaces than one Slack menu holds
        "role": "view", "role_kind": "ClusterRole", "auto_approve_up_to": "2h",
        "namespaces": TENANTS}
    return parse_config(data, config.source)


TENANTS = [f"tenant-{n:03d}" for n in range(120)]


def stored(runtime: SlackRuntime) -> int:
    with runtime.ctx.transaction() as uow:
        return len(uow.requests.find(limit=None))


def events(runtime: SlackRuntime, action: str) -> list[AuditEvent]:
    with runtime.ctx.transaction() as uow:
        return [e for e in uow.audit.events() if e.action == action]


def dms(slack: FakeSlack, user: str, says: str) -> list[dict[str, Any]]:
    return wait_for(lambda: [m for m in slack.dms_to(user) if says in m["text"]])  # type: ignore[no-any-return]


def actions(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


def choose(driver: Driver, user: str, action_id: str, value: str,
           ts: str = "1.000001") -> None:
    """Pick an option of a message's menu, as Slack sends it (``block_actions`` with
    ``selected_option``)."""
    payload = {
        "type": "block_actions", "user": {"id": user}, "team": {"id": "T0TEAM"},
        "api_app_id": "A0APP", "trigger_id": "trigger-choice",
        "actions": [{"type": "static_select", "action_id": action_id, "block_id": "b",
                     "selected_option": {"text": {"type": "plain_text", "text": value},
                                         "value": value},
                     "action_ts": str(time.time())}],
        "channel": {"id": APPROVALS_CHANNEL},
        "container": {"type": "message", "channel_id": APPROVALS_CHANNEL, "message_ts": ts},
        "message": {"ts": ts}, "response_url": driver.slack.response_url(),
    }
    response = driver.dispatch(urlencode({"payload": json.dumps(payload)}))
    assert response.status == 200, response.body


def user_picked(user: str | None) -> dict[str, Any]:
    return {"pick_grantee": {"type": "users_select", "selected_user": user}}


# --- eligibility --------------------------------------------------------------------------


def test_a_role_with_requesters_refuses_others_and_names_who_may(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    answer = driver.ask(ALICE, "request staging secrets 1h OPS-1 look")["text"]
    assert answer.startswith("You are not among those who may ask for staging/secrets: "
                             "<@U0CAROL03> and members of user group <!subteam^S0SRE0001> may.")
    incomplete = driver.ask(ALICE, "request staging secrets")["text"]  # no form opens
    assert "not among those who may ask for staging/secrets" in incomplete
    assert stored(runtime) == 0 and not slack.called("views.open")
    assert not slack.channel_messages(APPROVALS_CHANNEL)

    assert "Request #1" in driver.ask(CAROL, "request staging secrets 1h OPS-1 look")["text"]
    assert "Request #2" in driver.ask(DAVE, "request staging secrets 1h OPS-2 look")["text"]


def test_clusters_and_the_form_offer_only_what_the_person_may_ask_for(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    assert "`secrets`" not in driver.ask(ALICE, "clusters")["text"]
    assert "`edit`" in driver.ask(ALICE, "clusters")["text"]
    assert "`secrets`" in driver.ask(CAROL, "clusters")["text"]
    assert f"reason: {HINT}" in driver.ask(ADMIN, "clusters")["text"]  # admins see all

    driver.command(ALICE, "request staging")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    roles = [o["value"] for b in modal["blocks"] if b["block_id"] == "role"
             for o in b["element"]["options"]]
    assert "secrets" not in roles and "edit" in roles

    forged = driver.submit(ALICE, modal, {
        "cluster": selected("pick_cluster", "staging"), "role": selected("pick_role", "secrets"),
        "duration": text_input("duration", "1h"), "reason": text_input("reason", "OPS-1 x")})
    errors = json.loads(forged.body)["errors"]
    assert errors["role"].startswith("You are not among those who may ask for staging/secrets")
    assert stored(runtime) == 0


# --- on someone's behalf ------------------------------------------------------------------


def test_an_approver_asks_for_someone_who_gets_the_access(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
        granter: InMemoryGranter) -> None:
    answer = driver.ask(BOB, "request --for <@U0ALICE01|alice> staging edit 2h deploy fix")
    assert answer["text"].startswith(
        "Request #1 filed: <@U0BOB0002> asks for <@U0ALICE01>: 2h for *staging/edit*")
    request = grants.get(runtime.ctx, 1)
    assert (request.requester_id, request.grantee, request.subject) == (
        BOB, ALICE, "u0alice01@example.com")
    assert events(runtime, "requested")[0].details["grantee"] == ALICE

    ts, message = approval_message(slack)
    assert "<@U0BOB0002> asks for <@U0ALICE01>" in message["text"]
    assert "*For*\\n<@U0ALICE01>" in json.dumps(message["blocks"])
    assert "cannot approve your own request #1" in driver.press(BOB, "approve", "1", ts=ts)
    assert "it asks for access for you" in driver.press(ALICE, "approve", "1", ts=ts)
    assert state_of(runtime, 1) is State.PENDING

    driver.click(DAVE, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert granter.active[1][0] == "u0alice01@example.com"
    active = dms(slack, ALICE, "is active")[0]
    assert "<@U0BOB0002> asked for this access for you" in active["text"]
    assert actions(active) == ["extend", "revoke"]
    assert wait_for(lambda: slack.uploaded_to(slack.dm_channel(ALICE)))[0]["filename"] \
        == "kubeconfig.yaml"
    assert not slack.uploaded_to(slack.dm_channel(BOB))
    told = dms(slack, BOB, "you made for <@U0ALICE01>")
    assert any("received how to connect" in m["text"] for m in told)

    assert "*#1* staging/edit for <@U0ALICE01>: active" in str(driver.ask(ALICE, "list")["blocks"])
    driver.event({"type": "app_home_opened", "user": ALICE, "tab": "home"})
    home = wait_for(lambda: [v for v in slack.views if v.get("type") == "home"])[0]
    assert "*#1* staging/edit for <@U0ALICE01>" in json.dumps(home)

    assert driver.ask(ALICE, "revoke 1")["text"] == "Request #1 is revoked."
    dms(slack, ALICE, "was revoked")
    ended = dms(slack, BOB, "Revoked by <@U0ALICE01>")[0]
    assert actions(ended) == ["request_again"]


def test_asking_for_others_is_refused_clearly_and_changes_nothing(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    refusals = {
        "request --for <@U0ALICE01> staging edit 1h x": "Only approvers of staging/edit and "
                                                       "admins may ask for it on someone else",
        "request --for <@U0NOBODY9> staging logs 1h x": "Slack knows no active user U0NOBODY9",
        "request --for @alice staging logs 1h x": "'@alice' is not a mention of a Slack user",
        "request staging logs 1h x --for": "`--for` needs a person",
    }
    for text, says in refusals.items():
        assert says in driver.ask(CAROL, text)["text"], text
    not_eligible = driver.ask(BOB, "request --for <@U0ALICE01> staging secrets 1h OPS-1 x")
    assert not_eligible["text"].startswith(
        "The person you ask for is not among those who may ask for staging/secrets")
    assert stored(runtime) == 0

    # Where the role allows it, anyone may; the grantee's open requests count as duplicates.
    assert "Request #1" in driver.ask(CAROL, "request --for <@U0ALICE01> staging logs 1h x")[
        "text"]
    again = driver.ask(BOB, "request staging logs 1h y --for <@U0ALICE01>")["text"]
    assert "The person you ask for already has staging/logs open with request #1" in again
    assert "Request #2" in driver.ask(ALICE, "request staging edit 1h mine")["text"]
    assert "already has staging/edit open with request #2 (pending)" in driver.ask(
        BOB, "request --for U0ALICE01 staging edit 1h z")["text"]
    assert stored(runtime) == 2


def test_the_form_asks_for_someone_else(driver: Driver, slack: FakeSlack,
                                        runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit")
    plain = wait_for(lambda: slack.called("views.open"))[0]["view"]
    assert "for" not in [b["block_id"] for b in plain["blocks"]]  # ALICE may not

    driver.command(BOB, "request staging edit")
    modal = wait_for(lambda: slack.called("views.open")[1:])[0]["view"]
    assert [b["block_id"] for b in modal["blocks"]] == [
        "cluster", "role", "for", "duration", "start_at", "reason"]
    values = {"cluster": selected("pick_cluster", "staging"),
              "role": selected("pick_role", "edit"), "for": user_picked(ALICE),
              "duration": text_input("duration", "1h"), "reason": text_input("reason", "fix")}
    assert driver.submit(BOB, modal, values).body == ""
    wait_for(lambda: state_of(runtime, 1) is State.PENDING)
    assert grants.get(runtime.ctx, 1).grantee == ALICE

    refused = driver.submit(CAROL, modal, values)  # CAROL approves nothing on staging
    assert "Only approvers of staging/edit" in json.loads(refused.body)["errors"]["for"]


# --- approve for less ---------------------------------------------------------------------


def test_approve_for_less_by_command(driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
                                     granter: InMemoryGranter, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 4h fix")
    longer = driver.ask(BOB, "approve 1 --for 8h")["text"]
    assert "Request #1 asks for 4h: approve for that or less, not 8h." in longer
    assert grants.get(runtime.ctx, 1).approvals == []

    answer = driver.ask(BOB, "approve 1 --for 1h looks fine")["text"]
    assert answer.startswith("You approved request #1 for 1h.")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    request = grants.get(runtime.ctx, 1)
    assert request.ends_at == clock() + timedelta(hours=1)
    assert granter.active[1][1] == clock() + timedelta(hours=1)
    assert events(runtime, "approved")[0].details["approved_for"] == 3600
    dms(slack, ALICE, "was approved for 1h of the 4h asked")
    dms(slack, ALICE, "for 1h of the 4h asked.")  # the active DM too
    ts, _ = approval_message(slack)
    wait_for(lambda: "for 1h: looks fine" in json.dumps(slack.message(APPROVALS_CHANNEL, ts)))


def test_approve_for_less_from_the_approval_message(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging edit 2h fix")
    ts, message = approval_message(slack)
    assert actions(message) == ["approve", "deny"]
    menu = next(b["accessory"] for b in message["blocks"]
            if b.get("accessory", {}).get("action_id") == "approve_for")
    assert [o["value"] for o in menu["options"]] == ["1:15m", "1:30m", "1:1h"]

    choose(driver, ALICE, "approve_for", "1:30m", ts)
    wait_for(lambda: [r for r in slack.responses if "own request" in r["text"]])
    choose(driver, BOB, "approve_for", "1:30m", ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert grants.get(runtime.ctx, 1).ends_at == clock() + timedelta(minutes=30)
    decided = wait_for(lambda: "Active until" in json.dumps(
        slack.message(APPROVALS_CHANNEL, ts)) and slack.message(APPROVALS_CHANNEL, ts))
    assert "approve_for" not in json.dumps(decided)  # the menu goes with the buttons


def test_with_a_quorum_the_shortest_approved_applies(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request prod view 4h debugging")
    assert "Waiting for 1 more" in driver.ask(BOB, "approve 1 --for 1h")["text"]
    driver.ask(CAROL, "approve 1 --for 2h")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert grants.get(runtime.ctx, 1).ends_at == clock() + timedelta(hours=1)
    dms(slack, ALICE, "was approved for 1h of the 4h asked")


# --- reasons with tickets -----------------------------------------------------------------


def test_a_reason_must_name_its_ticket_and_the_ticket_is_a_link(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    missing = driver.ask(CAROL, "request staging secrets 1h just looking")["text"]
    assert missing == f"staging/secrets needs a reason that names its ticket: {HINT}."
    assert stored(runtime) == 0

    driver.ask(CAROL, "request staging secrets 1h OPS-12 <!channel> check")
    link = "<https://jira.example.com/browse/OPS-12|OPS-12>"
    _, message = approval_message(slack)
    assert f"*Reason*\\n{link} &lt;!channel&gt; check" in json.dumps(message["blocks"])
    assert link in str(driver.ask(CAROL, "list")["blocks"])
    driver.event({"type": "app_home_opened", "user": BOB, "tab": "home"})
    home = wait_for(lambda: [v for v in slack.views if v.get("type") == "home"])[0]
    assert link in json.dumps(home)

    driver.ask(BOB, "approve 1")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert link in dms(slack, CAROL, "is active")[0]["text"]


def test_the_form_answers_a_reason_without_its_ticket_on_the_reason(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    driver.command(CAROL, "request staging secrets")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    reason = next(b for b in modal["blocks"] if b["block_id"] == "reason")
    assert reason["hint"]["text"] == HINT
    answer = driver.submit(CAROL, modal, {
        "cluster": selected("pick_cluster", "staging"), "role": selected("pick_role", "secrets"),
        "duration": text_input("duration", "1h"), "reason": text_input("reason", "no ticket")})
    assert json.loads(answer.body)["errors"] == {
        "reason": f"staging/secrets needs a reason that names its ticket: {HINT}."}
    assert stored(runtime) == 0


# --- request again ------------------------------------------------------------------------


def test_request_again_opens_the_form_as_it_was(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    driver.ask(ALICE, "request staging deploy 90m -n payments fix the shop")
    driver.ask(BOB, "approve 1")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    clock.advance(timedelta(hours=2))
    assert grants.expire_due(runtime.ctx) == 1
    expired = dms(slack, ALICE, "has expired")[0]
    assert actions(expired) == ["request_again"]

    assert "not yours to ask for again" in driver.press(CAROL, "request_again", "1",
                                                        channel=slack.dm_channel(ALICE))
    driver.click(ALICE, "request_again", "1", channel=slack.dm_channel(ALICE))
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    assert slack.called("views.open")[0]["trigger_id"] == "trigger-1"
    chosen = {b["block_id"]: b["element"].get("initial_option", {}).get("value")
              or b["element"].get("initial_value") for b in modal["blocks"]}
    assert chosen == {"cluster": "staging", "role": "deploy", "namespace": "payments",
                      "duration": "1h30m", "start_at": None, "reason": "fix the shop"}
    values = {"cluster": selected("pick_cluster", "staging"),
              "role": selected("pick_role", "deploy"),
              "namespace": selected("namespace", "payments"),
              "duration": text_input("duration", "1h30m"),
              "reason": text_input("reason", "fix the shop")}
    assert driver.submit(ALICE, modal, values).body == ""
    wait_for(lambda: state_of(runtime, 2) is State.PENDING)


def test_request_again_after_a_revocation(driver: Driver, slack: FakeSlack,
                                          runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging view 1h")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    driver.ask(BOB, "revoke 1 done")
    revoked = dms(slack, ALICE, "was revoked")[0]
    assert actions(revoked) == ["request_again"]


def test_request_again_in_a_namespace_past_the_first_hundred_opens_the_form_as_it_was(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, clock: FakeClock) -> None:
    """A role of 120 namespaces: the form offers each (in groups, as Slack holds 100 a menu),
    and Request again shows the one asked for before as chosen, which Slack requires to be
    among those offered."""
    driver.ask(ALICE, "request staging tenants 1h -n tenant-110 check the shop")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    clock.advance(timedelta(hours=2))
    assert grants.expire_due(runtime.ctx) == 1
    dms(slack, ALICE, "has expired")
    driver.click(ALICE, "request_again", "1", channel=slack.dm_channel(ALICE))
    opened = wait_for(lambda: slack.called("views.open"))
    assert slack.errors("views.open") == []
    [menu] = [b["element"] for b in opened[0]["view"]["blocks"] if b["block_id"] == "namespace"]
    assert menu["initial_option"]["value"] == "tenant-110"
    assert [o["value"] for g in menu["option_groups"] for o in g["options"]] == TENANTS
