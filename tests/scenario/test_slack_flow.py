"""The Slack surface end to end: signed requests in, the fake Slack Web API out, database state
checked alongside the messages Slack received."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bot.app import SlackRuntime
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.services import grants
from tests.conftest import ALICE, BOB, CAROL, DAVE
from tests.fakes.ports import InMemoryGranter
from tests.scenario.conftest import (
    APPROVALS_CHANNEL,
    Driver,
    approval_message,
    selected,
    state_of,
    text_input,
    wait_for,
)


def buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


def test_request_approve_revoke(driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
                                granter: InMemoryGranter) -> None:
    answer = driver.ask(ALICE, "request staging edit 2h deploy hotfix")
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith("Request #1 filed: <@U0ALICE01> asks 2h for *staging/edit*")

    ts, message = approval_message(slack)
    assert buttons(message) == ["approve", "deny"]
    rendered = str(message["blocks"])
    assert "u0alice01@example.com" in rendered and "deploy hotfix" in rendered
    assert "Waiting for 1 more approval" in rendered

    driver.click(BOB, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert granter.calls["granted"] == 1
    updated = wait_for(lambda: "Active until" in str(slack.message(APPROVALS_CHANNEL, ts))
                       and slack.message(APPROVALS_CHANNEL, ts))
    assert buttons(updated) == []
    assert "<@U0BOB0002>" in str(updated["blocks"])

    dms = wait_for(lambda: [m for m in slack.dms_to(ALICE) if "is active" in m["text"]])
    assert "connect as u0alice01@example.com" in dms[0]["text"]
    assert [b["elements"][0]["action_id"] for b in dms[0]["blocks"]
            if b["type"] == "actions"] == ["extend"]
    files = wait_for(lambda: slack.uploaded_to(slack.dm_channel(ALICE)))
    assert files[0]["filename"] == "kubeconfig.yaml"
    assert files[0]["content"] == b"client-key-data: SECRET"
    assert not slack.called("conversations.open")  # the DM's ID came with the message above

    listed = driver.ask(ALICE, "list active")
    assert "*#1* staging/edit for <@U0ALICE01>: active, 2h left" in str(listed["blocks"])

    driver.click(ALICE, "revoke", "1", channel=slack.dm_channel(ALICE))
    wait_for(lambda: state_of(runtime, 1) is State.REVOKED)
    assert 1 not in granter.active
    wait_for(lambda: "Revoked by <@U0ALICE01>" in str(slack.message(APPROVALS_CHANNEL, ts)))
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "was revoked" in m["text"]])


def test_list_shows_the_grant(driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    assert "Active until" in driver.ask(ALICE, "request staging view 1h")["text"]
    listed = driver.ask(ALICE, "list")
    assert listed["text"] == "1 requests in mine"
    assert "*#1* staging/view for <@U0ALICE01>: active, 1h left" in str(listed["blocks"])


def test_group_member_approves(driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit 1h fix")
    ts, _ = approval_message(slack)
    driver.click(DAVE, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert slack.called("usergroups.users.list")[0]["usergroup"] == "S0SRE0001"


def test_refused_clicks_explain_and_change_nothing(driver: Driver, slack: FakeSlack,
                                                   runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging edit 1h fix")
    ts, _ = approval_message(slack)
    for user, says in [(ALICE, "cannot approve your own request #1"),
                       (CAROL, "not an approver for staging/edit")]:
        assert says in driver.press(user, "approve", "1", ts=ts)
    assert state_of(runtime, 1) is State.PENDING
    assert grants.get(runtime.ctx, 1).approvals == []


def test_double_click_grants_once(driver: Driver, slack: FakeSlack, runtime: SlackRuntime,
                                  granter: InMemoryGranter) -> None:
    driver.ask(ALICE, "request staging edit 1h fix")
    ts, _ = approval_message(slack)
    seen = len(slack.responses)
    driver.click(BOB, "approve", "1", ts=ts)
    driver.click(BOB, "approve", "1", ts=ts)
    answers = [r["text"] for r in wait_for(lambda: len(slack.responses) >= seen + 2
                                           and slack.responses[seen:])]
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    assert granter.calls["grant"] == 1
    assert len([a for a in answers if a.startswith("You approved request #1")]) == 1, answers
    refused = [a for a in answers if "already decided" in a or "cannot be approved" in a]
    assert len(refused) == 1, answers


def test_deny_asks_for_a_reason(driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit 1h fix")
    ts, _ = approval_message(slack)
    driver.click(BOB, "deny", "1", ts=ts)
    modal = wait_for(lambda: [v for v in slack.views if v.get("callback_id") == "deny_modal"])[0]
    empty = driver.submit(BOB, modal, {"reason": text_input("reason", "")})
    assert empty.status == 200 and '"response_action": "errors"' in empty.body
    assert "Say why" in empty.body
    assert state_of(runtime, 1) is State.PENDING
    stranger = driver.submit(CAROL, modal, {"reason": text_input("reason", "no")})
    assert "not an approver" in stranger.body
    done = driver.submit(BOB, modal, {"reason": text_input("reason", "use view")})
    assert done.status == 200 and done.body == ""
    wait_for(lambda: state_of(runtime, 1) is State.DENIED)  # the worker denies it
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "denied by <@U0BOB0002>: use view"
                      in m["text"]])
    wait_for(lambda: buttons(slack.message(APPROVALS_CHANNEL, ts)) == [])


def test_incomplete_request_opens_a_prefilled_modal(driver: Driver, slack: FakeSlack,
                                                    runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging deploy 2h")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    assert modal["callback_id"] == "request_modal"
    block_ids = [b["block_id"] for b in modal["blocks"]]
    assert block_ids == ["cluster", "role", "namespace", "duration", "start_at", "reason"]
    assert modal["blocks"][3]["element"]["initial_value"] == "2h"

    values = {"cluster": selected("pick_cluster", "staging"),
              "role": selected("pick_role", "deploy"),
              "namespace": selected("namespace", None),
              "duration": text_input("duration", "3x"),
              "reason": text_input("reason", "")}
    refused = driver.submit(ALICE, modal, values)
    assert "'3x' is not a duration" in refused.body
    values["duration"] = text_input("duration", "9h")
    refused = driver.submit(ALICE, modal, values)
    errors = refused.body
    assert "longer than staging/deploy allows" in errors
    assert "needs a reason" in errors and "Name a namespace" in errors

    values.update(duration=text_input("duration", "2h"), reason=text_input("reason", "rollout"),
                  namespace=selected("namespace", "shop"))
    accepted = driver.submit(ALICE, modal, values)
    assert accepted.body == ""
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "Request #1 filed" in m["text"]])
    filed = grants.get(runtime.ctx, 1)
    assert (filed.target, filed.reason) == ("staging/deploy in namespace shop", "rollout")


def test_modal_roles_follow_the_cluster(driver: Driver, slack: FakeSlack) -> None:
    driver.command(ALICE, "request")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    assert [b["block_id"] for b in modal["blocks"]] == ["cluster"]
    payload_view = {**modal, "id": "VMODAL", "hash": "h",
                    "state": {"values": {"cluster": selected("pick_cluster", "prod")}}}
    import json
    from urllib.parse import urlencode
    body = urlencode({"payload": json.dumps({
        "type": "block_actions", "user": {"id": ALICE}, "team": {"id": "T0TEAM"},
        "api_app_id": "A0APP", "trigger_id": "t", "view": payload_view,
        "container": {"type": "view", "view_id": "VMODAL"},
        "actions": [{"type": "static_select", "action_id": "pick_cluster", "block_id": "cluster",
                     "selected_option": {"value": "prod"}}]})})
    driver.dispatch(body)
    updated = wait_for(lambda: slack.called("views.update"))[0]["view"]
    roles = [o["value"] for b in updated["blocks"] if b["block_id"] == "role"
             for o in b["element"]["options"]]
    assert roles == ["view", "admin"]


def test_app_home(driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging view 1h")
    driver.ask(ALICE, "request prod view 1h debugging")
    driver.event({"type": "app_home_opened", "user": ALICE, "tab": "home"})
    home = wait_for(lambda: slack.called("views.publish"))[0]
    assert home["user_id"] == ALICE
    text = str(home["view"]["blocks"])
    assert "Your active grants" in text and "staging/view" in text
    assert "Waiting for 2 more approvals" in text
    driver.event({"type": "app_home_opened", "user": BOB, "tab": "home"})
    bob = wait_for(lambda: [p for p in slack.called("views.publish") if p["user_id"] == BOB])[0]
    assert "Waiting for your decision* (1)" in str(bob["view"]["blocks"])


@pytest.mark.parametrize("error", ["not_found", "hash_conflict", "view_too_large"])
def test_an_app_home_slack_refuses_is_logged_not_a_listener_error(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, error: str,
        caplog: pytest.LogCaptureFixture) -> None:
    slack.fail("views.publish", error, times=1)
    driver.event({"type": "app_home_opened", "user": ALICE, "tab": "home"})
    wait_for(lambda: slack.errors("views.publish"))
    wait_for(lambda: any(f"App Home of {ALICE} not published: Slack answered {error}"
                         in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_break_glass_is_loud(driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request prod admin 30m --break-glass prod is down")
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    dms = [m for m in slack.called("chat.postMessage") if "BREAK-GLASS" in m["text"]]
    assert {m["channel"] for m in dms} == {slack.dm_channel(u) for u in (BOB, CAROL, DAVE)}
    assert all(m["text"].startswith("<!here>") for m in dms)


def test_extend_button(driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit 1h fix")
    ts, _ = approval_message(slack)
    driver.click(BOB, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    ends = grants.get(runtime.ctx, 1).ends_at
    assert ends is not None
    driver.click(ALICE, "extend", "1", channel=slack.dm_channel(ALICE))
    modal = wait_for(lambda: [v for v in slack.views if v.get("callback_id") == "extend_modal"])[0]
    refused = driver.submit(ALICE, modal, {"duration": text_input("duration", "soon"),
                                           "reason": text_input("reason", "")})
    assert "'soon' is not a duration" in refused.body
    driver.submit(ALICE, modal, {"duration": text_input("duration", "2h"),
                                 "reason": text_input("reason", "slow rollout")})
    wait_for(lambda: grants.get(runtime.ctx, 1).ends_at != ends)
    from datetime import timedelta
    assert grants.get(runtime.ctx, 1).ends_at == ends + timedelta(hours=2)
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "now lasts until" in m["text"]])


def test_link_gitlab_waits_for_an_admin(driver: Driver, slack: FakeSlack,
                                        granter: InMemoryGranter, runtime: SlackRuntime) -> None:
    from bot.domain.ports import ExternalAccount
    from tests.conftest import ADMIN

    assert "GitLab has no user 'ghost'" in driver.ask(ALICE, "link gitlab ghost")["text"]
    granter.accounts["alice"] = ExternalAccount("alice", "u0alice01@example.com")
    granter.accounts["al"] = ExternalAccount("al", None)
    assert driver.ask(ALICE, "link gitlab @alice")["text"] == "Linked to GitLab user `alice`."
    answer = driver.ask(ALICE, "link gitlab al")["text"]
    assert "an admin must confirm the link; the admins have been asked" in answer
    asked = wait_for(lambda: slack.dms_to(ADMIN))[0]
    assert asked["blocks"][1]["elements"][0]["action_id"] == "confirm_link"
    assert "Only admins may confirm" in driver.press(BOB, "confirm_link", ALICE,
                                                     channel=slack.dm_channel(BOB))
    assert "is now linked to GitLab user `al`" in driver.press(ADMIN, "confirm_link", ALICE,
                                                               channel=slack.dm_channel(ADMIN))
    assert "*Gitlab*: `al`" in driver.ask(ALICE, "whoami")["text"]


def test_weekly_reminder_and_review_in_slack(driver: Driver, slack: FakeSlack,
                                             runtime: SlackRuntime) -> None:
    from bot.services import reminders

    driver.ask(ALICE, "request staging view 1h")  # auto-approved, active
    slack.rate_limited["chat.postMessage"] = 1
    assert reminders.weekly(runtime.ctx) == 2  # Monday 09:00: the DM and the review
    dm = [m for m in slack.dms_to(ALICE) if "end within a week" in m["text"]]
    assert [b["accessory"]["action_id"] for b in dm[0]["blocks"] if "accessory" in b] \
        == ["extend"]
    review = [m for m in slack.channel_messages(APPROVALS_CHANNEL)
              if "Access review: 1 active grant" in (m["text"] or "")]
    assert review[0]["blocks"][1]["accessory"]["action_id"] == "revoke"
    assert "as `u0alice01@example.com`" in review[0]["blocks"][1]["text"]["text"]
    assert reminders.weekly(runtime.ctx) == 0


def test_failure_is_announced_to_the_approvers(driver: Driver, slack: FakeSlack,
                                               runtime: SlackRuntime,
                                               granter: InMemoryGranter) -> None:
    from tests.fakes.ports import permanent

    driver.ask(ALICE, "request staging edit 1h deploy")
    ts, _ = approval_message(slack)
    granter.fail_next = [permanent("the bot may not bind edit")]
    driver.click(BOB, "approve", "1", ts=ts)
    wait_for(lambda: state_of(runtime, 1) is State.FAILED)
    thread = wait_for(lambda: [m for m in slack.channel_messages(APPROVALS_CHANNEL)
                               if m.get("thread_ts") == ts])
    assert "Failed: the bot may not bind edit" in thread[0]["text"]
    wait_for(lambda: [m for m in slack.dms_to(ALICE) if "could not be granted" in m["text"]])


def test_two_approvers_clicking_at_once_leave_every_message_showing_the_grant(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    """Bob and Carol approve prod/view (two approvals needed) at the same moment; the update
    that still waits for one more approval is slow to reach Slack and lands after the final
    one. Every approval message ends showing the grant active, with no Approve button."""
    driver.ask(ALICE, "request prod view 1h debug")
    posted = wait_for(lambda: [m for m in slack.called("chat.postMessage")
                               if "approve" in str(m.get("blocks"))][2:] and
                      [m for m in slack.called("chat.postMessage")
                       if "approve" in str(m.get("blocks"))])
    assert len(posted) == 3  # Bob, Carol and Dave, each in their DM
    slack.latency = lambda method, params: \
        0.3 if "1 more approval" in str(params.get("text")) else 0.0
    answered = len(slack.responses)
    clicks = [threading.Thread(target=driver.click, args=(user, "approve", "1"),
                               kwargs={"channel": f"D{user}"})  # in each one's own DM
              for user in (BOB, CAROL)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join()
    wait_for(lambda: state_of(runtime, 1) is State.ACTIVE)
    dms = {m["channel"] for m in posted}

    def shown() -> list[dict[str, Any]]:
        return [message for (channel, _), message in slack.messages.items() if channel in dms]

    wait_for(lambda: len(slack.responses) >= answered + 2)  # each click's use case is done
    assert len(shown()) == 3
    for message in shown():
        assert "Active until" in message["text"], message["text"]
        assert "approve" not in buttons(message)


def test_a_reason_with_markup_characters_is_kept_and_shown_as_typed(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime) -> None:
    """Slack sends ``&``, ``<`` and ``>`` of a slash command's text as entities: the reason is
    stored as the person typed it, and every message shows it escaped once, never ``&amp;lt;``."""
    driver.ask(ALICE, "request staging edit 2h fix p99 > 2s & <script> in checkout")
    assert grants.get(runtime.ctx, 1).reason == "fix p99 > 2s & <script> in checkout"
    _, message = approval_message(slack)
    rendered = str(message["blocks"])
    assert "fix p99 &gt; 2s &amp; &lt;script&gt; in checkout" in rendered
    assert "&amp;gt;" not in rendered and "&amp;lt;" not in rendered and "&amp;amp;" not in rendered
