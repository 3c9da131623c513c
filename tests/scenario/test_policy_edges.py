"""Policy at the edges, end to end over signed Slack requests: options given twice or in their
``--opt=VALUE`` form, who the access may be for, who may withdraw it, far-off windows."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bot.app import SlackRuntime
from bot.domain.model import State
from bot.fakes.slack import FakeSlack
from bot.services import grants
from tests.conftest import ALICE, BOB, CAROL
from tests.fakes.ports import FakeClock
from tests.scenario.conftest import Driver, wait_for


def stored(runtime: SlackRuntime) -> int:
    with runtime.ctx.transaction() as uow:
        return len(uow.requests.find(limit=None))


# --- options given twice, and the --opt=VALUE form ----------------------------------------


@pytest.mark.parametrize(("user", "text"), [
    (BOB, "request --for <@U0ALICE01> --for <@U0CAROL03> staging edit 1h x"),
    (BOB, "request --for=<@U0ALICE01> staging edit 1h x --for <@U0CAROL03>"),
    (ALICE, "request staging edit 1h --at 22:00 --at 23:00 x"),
    (ALICE, "request staging edit 1h --at=22:00 x --at=tomorrow 23:00"),
    (ALICE, "request -n shop -n payments staging deploy 1h x"),
    (ALICE, "request --break-glass --break-glass prod admin 1h x"),
])
def test_a_request_option_given_twice_files_nothing(driver: Driver, runtime: SlackRuntime,
                                                    slack: FakeSlack, user: str,
                                                    text: str) -> None:
    answer = driver.ask(user, text)["text"]
    assert "is given twice: give it once, `/k8s-access request" in answer, answer
    assert stored(runtime) == 0
    assert slack.called("views.open") == []


@pytest.mark.parametrize("text", ["approve 1 --for 1h --for 30m", "approve 1 --for=1h --for 30m",
                                  "approve 1 --for=30m ok --for=1h"])
def test_approve_for_given_twice_approves_nothing(driver: Driver, runtime: SlackRuntime,
                                                  text: str) -> None:
    driver.ask(ALICE, "request staging edit 2h fix")
    answer = driver.ask(BOB, text)["text"]
    assert "`--for` is given twice: give it once, `/k8s-access approve" in answer
    assert grants.get(runtime.ctx, 1).approvals == []


@pytest.mark.parametrize("text", ["approve 1 --for=1h", "approve 1 lgtm --for=1h",
                                  "approve 1 \u2014for 1h lgtm"])
def test_approve_for_in_the_equals_form_approves_that_much(driver: Driver, runtime: SlackRuntime,
                                                           clock: FakeClock, text: str) -> None:
    driver.ask(ALICE, "request staging edit 2h fix")
    assert driver.ask(BOB, text)["text"].startswith("You approved request #1 for 1h.")
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
    assert grants.get(runtime.ctx, 1).ends_at == clock() + timedelta(hours=1)


def test_the_equals_forms_of_request_options(driver: Driver, runtime: SlackRuntime) -> None:
    answer = driver.ask(BOB, "request --for=<@U0ALICE01> -n=shop staging deploy 1h x")["text"]
    assert answer.startswith("Request #1 filed"), answer
    request = grants.get(runtime.ctx, 1)
    assert (request.grantee, request.namespace) == (ALICE, "shop")
    answer = driver.ask(CAROL, "request staging edit 1h --at=tomorrow 10:00 x")["text"]
    assert answer.startswith("Request #2 filed"), answer
    assert grants.get(runtime.ctx, 2).window_start is not None


@pytest.mark.parametrize(("text", "says"), [
    ("deny 1 --for 1h no", "Unknown option `--for`: `/k8s-access deny"),
    ("cancel 1 --force", "Unknown option `--force`: `/k8s-access cancel"),
    ("approve 1 --at 10:00", "Unknown option `--at`: `/k8s-access approve"),
])
def test_an_option_a_verb_does_not_take_changes_nothing(driver: Driver, runtime: SlackRuntime,
                                                        text: str, says: str) -> None:
    driver.ask(ALICE, "request staging edit 2h fix")
    user = ALICE if text.startswith("cancel") else BOB
    assert says in driver.ask(user, text)["text"]
    request = grants.get(runtime.ctx, 1)
    assert (request.state, request.approvals) == (State.PENDING, [])


def test_a_reason_may_name_a_flag_that_is_no_option(driver: Driver, runtime: SlackRuntime) -> None:
    driver.ask(ALICE, "request staging edit 2h fix")
    answer = driver.ask(BOB, "deny 1 breaks --force-push policy")["text"]
    assert "Unknown option" not in answer, answer
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.DENIED)
    assert grants.get(runtime.ctx, 1).end_reason == "breaks --force-push policy"


# --- who the access may be for ------------------------------------------------------------

GONE, ROBOT, GUEST, LONE, OUTSIDER = "U0GONE001", "U0ROBOT01", "U0GUEST01", "U0LONE001", "U0EXT0001"
ACCOUNTS = {
    GONE: "the Slack account of U0GONE001 (gone) is deactivated",
    ROBOT: "U0ROBOT01 (robot) is a bot or an app, not a person",
    GUEST: "U0GUEST01 (guest) is a guest of this workspace",
    LONE: "U0LONE001 (lone) is a guest of this workspace",
    OUTSIDER: "U0EXT0001 (ext) is from another organisation (a Slack Connect user)",
    "U0NOBODY9": "Slack knows no active user U0NOBODY9",
}


@pytest.fixture
def accounts(slack: FakeSlack) -> FakeSlack:
    for user, name in [(GONE, "gone"), (ROBOT, "robot"), (GUEST, "guest"), (LONE, "lone"),
                       (OUTSIDER, "ext")]:
        slack.users[user] = {"email": f"{name}@example.com", "name": name}
    slack.deactivated.add(GONE)
    slack.bot_users.add(ROBOT)
    slack.guests.update({GUEST: "multi", LONE: "single"})
    slack.strangers.add(OUTSIDER)
    return slack


@pytest.mark.parametrize("grantee", list(ACCOUNTS))
@pytest.mark.parametrize("text", ["request --for <@{}> staging edit 1h x",
                                  "request --for <@{}> staging edit",
                                  "request staging --for={}"])
def test_access_is_never_asked_for_an_account_that_cannot_receive_it(
        driver: Driver, runtime: SlackRuntime, accounts: FakeSlack, grantee: str,
        text: str) -> None:
    answer = driver.ask(BOB, text.format(grantee))["text"]
    assert ACCOUNTS[grantee][1:] in answer, answer
    assert "went wrong" not in answer
    assert stored(runtime) == 0
    assert accounts.called("views.open") == []


@pytest.mark.parametrize("grantee", list(ACCOUNTS))
def test_the_form_refuses_such_an_account_on_its_for_field(
        driver: Driver, runtime: SlackRuntime, accounts: FakeSlack, grantee: str) -> None:
    from tests.scenario.conftest import selected, text_input

    view = {"type": "modal", "callback_id": "request_modal", "private_metadata": "{}"}
    refused = driver.submit(BOB, view, {
        "cluster": selected("pick_cluster", "staging"), "role": selected("pick_role", "edit"),
        "for": {"pick_grantee": {"type": "users_select", "selected_user": grantee}},
        "duration": text_input("duration", "1h"), "reason": text_input("reason", "x")})
    assert refused.status == 200, refused.body
    assert ACCOUNTS[grantee][1:] in json.loads(refused.body)["errors"]["for"]
    assert runtime.inbox.waiting() == 0
    assert stored(runtime) == 0


# --- who may withdraw a request asked on someone's behalf -----------------------------------


def test_the_grantee_the_requester_or_an_admin_may_cancel(driver: Driver, runtime: SlackRuntime,
                                                          slack: FakeSlack) -> None:
    from tests.conftest import ADMIN, DAVE

    for text in ("deploy -n shop 1h fix", "deploy -n payments 1h fix", "edit 1h fix"):
        driver.ask(BOB, f"request --for <@U0ALICE01> staging {text}")
    for user in (CAROL, DAVE):  # DAVE approves staging: he denies instead
        answer = driver.ask(user, "cancel 1")["text"]
        assert "Only the requester can cancel request #1 (or the person it asks access for, " \
               "or an admin)" in answer
    assert grants.get(runtime.ctx, 1).state is State.PENDING

    assert driver.press(ALICE, "cancel", "1", channel=slack.dm_channel(ALICE)) \
        == "Request #1 is cancelled."
    assert driver.ask(BOB, "cancel 2")["text"] == "Request #2 is cancelled."
    assert driver.ask(ADMIN, "cancel 3")["text"] == "Request #3 is cancelled."
    ended = {i: grants.get(runtime.ctx, i) for i in (1, 2, 3)}
    assert [(r.state, r.ended_by) for r in ended.values()] == [
        (State.CANCELLED, ALICE), (State.CANCELLED, BOB), (State.CANCELLED, ADMIN)]
    assert wait_for(lambda: [c for c in slack.called("chat.update")
                             if "Cancelled by <@U0ALICE01>." in json.dumps(c)])
    assert wait_for(lambda: [c for c in slack.called("chat.update")
                             if "Cancelled by the requester." in json.dumps(c)])


def test_the_grantee_may_revoke_what_was_asked_for_them(driver: Driver, runtime: SlackRuntime,
                                                        slack: FakeSlack) -> None:
    driver.ask(BOB, "request --for <@U0ALICE01> staging view 1h")  # auto-approved
    wait_for(lambda: grants.get(runtime.ctx, 1).state is State.ACTIVE)
    assert "Only the grantee" in driver.ask(CAROL, "revoke 1")["text"]
    assert driver.press(ALICE, "revoke", "1", channel=slack.dm_channel(ALICE)) \
        == "Request #1 is revoked."


# --- far-off and impossible starts ----------------------------------------------------------

FAR_OFF = [
    ("9999-12-31T23:59", "is more than 2w ahead"),
    ("9999-12-31T23:59Z", "is more than 2w ahead"),
    ("9999-12-31T23:59+14:00", "is more than 2w ahead"),
    ("0001-01-01T00:00", "is too far from now to be a start"),
    ("0001-01-01T00:00-12:00", "is in the past"),
    ("99999-01-01T10:00", "is not a time"),
    ("2026-02-30T10:00", "is not a date"),
    ("25:00", "is not a time of day"),
    ("tomorrow 24:00", "is not a time of day"),
    ("2026-12-02T10:00+23:59", "is not an offset"),
    ("2020-01-01T10:00", "is in the past"),
    ("2027-06-01T10:00", "is more than 2w ahead"),
]


@pytest.mark.parametrize(("at", "says"), FAR_OFF)
def test_a_far_off_start_is_refused_clearly(driver: Driver, runtime: SlackRuntime,
                                            slack: FakeSlack, at: str, says: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    slack.users[ALICE]["tz"] = "Europe/Berlin"  # east of UTC: year 1 begins before year 1
    answer = driver.ask(ALICE, f"request staging edit 1h --at {at} fix")["text"]
    assert says in answer and "went wrong" not in answer, answer
    refused = driver.submit(ALICE, {"type": "modal", "callback_id": "request_modal",
                                    "private_metadata": "{}"}, {
        "cluster": {"pick_cluster": {"type": "static_select", "selected_option": {
            "value": "staging", "text": {"type": "plain_text", "text": "staging"}}}},
        "role": {"pick_role": {"type": "static_select", "selected_option": {
            "value": "edit", "text": {"type": "plain_text", "text": "edit"}}}},
        "duration": {"duration": {"type": "plain_text_input", "value": "1h"}},
        "start_at": {"start_at": {"type": "plain_text_input", "value": at}},
        "reason": {"reason": {"type": "plain_text_input", "value": "fix"}}})
    assert says in json.loads(refused.body)["errors"]["start_at"]
    assert stored(runtime) == 0
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
