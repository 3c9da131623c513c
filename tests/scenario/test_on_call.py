"""On-call auto-approval end to end: signed Slack requests into the real app, the local Slack,
and local servers speaking PagerDuty's REST API v2 (HTTPS, through the ``pagerduty`` library)
and Opsgenie's Who-is-on-call API. Someone on call is approved by the policy and announced to
the approvers; anyone else, and every failure of the on-call service (5xx, refused
credentials, rate limit, an answer slower than the timeout), goes to the approvers with the
reason, never approved on doubt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import SlackRuntime
from bot.config import Config, Settings, parse_config
from bot.domain.model import State
from bot.fakes.opsgenie import API_KEY, FakeOpsgenie
from bot.fakes.pagerduty import TOKEN, FakePagerDuty
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.conftest import ALICE, BOB, PD_POLICY
from tests.fakes.ports import InMemoryGranter
from tests.scenario.conftest import (
    APPROVALS_CHANNEL,
    Driver,
    command_body,
    scenario_data,
    state_of,
    wait_for,
)

POLICY, SCHEDULE = PD_POLICY, "platform-oncall"
ALICE_EMAIL = f"{ALICE.lower()}@example.com"
TIMEOUT = 0.5
"""ON_CALL_TIMEOUT_SECONDS here: an answer held longer is doubt."""
SERVICES = ("pagerduty", "opsgenie")


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    """Which on-call service staging/edit names (each test runs against both)."""
    return str(request.param)


@pytest.fixture
def settings(slack: FakeSlack, pd: FakePagerDuty, og: FakeOpsgenie) -> Settings:
    return Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                    slack_api_url=slack.api_url, pagerduty_token=TOKEN,
                    pagerduty_api_url=pd.url, opsgenie_api_key=API_KEY,
                    opsgenie_api_url=og.url, on_call_timeout_seconds=TIMEOUT)


@pytest.fixture
def slack_config(service: str) -> Config:
    data = scenario_data()
    staging = data["clusters"]["staging"]
    section = {"escalation_policies": [POLICY], "levels": [1]} if service == "pagerduty" \
        else {"schedules": [SCHEDULE]}
    staging["roles"]["edit"] |= {"auto_approve_on_call": {service: section},
                                 "on_call_max_duration": "2h"}
    # Approved without anyone: auto_approve_up_to, break-glass.
    staging["roles"]["view"]["auto_approve_on_call"] = {service: section}
    data["clusters"]["prod"]["roles"]["admin"]["auto_approve_on_call"] = {service: section}
    return parse_config(data, Path("test.yaml"))


@dataclass
class Desk:
    """The on-call service staging/edit names, arranged alike whichever it is."""

    service: str
    pd: FakePagerDuty
    og: FakeOpsgenie

    def __post_init__(self) -> None:
        self.schedule = self.og.add_schedule(SCHEDULE)

    @property
    def name(self) -> str:
        return "PagerDuty" if self.service == "pagerduty" else "Opsgenie"

    def knows(self, email: str) -> str:
        """A user of the service, on call nowhere (Opsgenie needs no user: a username)."""
        return self.pd.add_user("Alice Example", email) if self.service == "pagerduty" \
            else email

    def puts_on_call(self, email: str, level: int = 1) -> None:
        if self.service == "pagerduty":
            self.pd.put_on_call(self.knows(email), POLICY, level)
        else:
            self.schedule.on_call.append(email)

    def calls(self) -> int:
        return len(self.pd.calls if self.service == "pagerduty" else self.og.calls)

    def answers(self, status: int) -> None:
        """Every call answered with ``status`` and the service's error body until healed."""
        if self.service == "pagerduty":
            self.pd.fail("*", status)
        else:
            self.og.fail(status)

    def refuses_the_credentials(self) -> None:
        (self.pd.tokens if self.service == "pagerduty" else self.og.keys).clear()

    def is_slow(self) -> None:
        (self.pd if self.service == "pagerduty" else self.og).slow(TIMEOUT * 4, times=2)

    def heals(self) -> None:
        self.pd.heal()
        self.og.heal()
        self.pd.tokens.add(TOKEN)
        self.og.keys.add(API_KEY)


@pytest.fixture
def desk(service: str, pd: FakePagerDuty, og: FakeOpsgenie) -> Desk:
    return Desk(service, pd, og)


def audit_of(runtime: SlackRuntime, request_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    with runtime.ctx.transaction() as uow:
        return [(e.actor, e.action, e.details) for e in uow.audit.events()
                if e.request_id == request_id]


def announcements(slack: FakeSlack) -> list[dict[str, Any]]:
    return [m for m in slack.called("chat.postMessage") if m["channel"] == APPROVALS_CHANNEL]


def ask_patiently(driver: Driver, user: str, text: str) -> dict[str, Any]:
    """:meth:`Driver.ask`, waiting out an on-call service's timeout on a busy machine."""
    url = driver.slack.response_url()
    assert driver.dispatch(command_body(driver.slack, user, text, url)).status == 200
    answer: dict[str, Any] = wait_for(lambda: driver.slack.responses_to(url), timeout=30)[0]
    return answer


def test_on_call_is_approved_by_policy_active_and_announced(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, granter: InMemoryGranter,
        desk: Desk) -> None:
    desk.puts_on_call(ALICE_EMAIL)
    where = "escalation policy Platform (PPLATF1), level 1" if desk.service == "pagerduty" \
        else f"schedule {SCHEDULE}"
    answer = driver.ask(ALICE, "request staging edit 1h checkout is down")
    assert answer["text"].startswith("Request #1: :large_green_circle: Active until")
    assert (f":pager: Approved by the policy because you are on call: {desk.name}: {where}. "
            "The approvers were told and will review it.") in answer["text"]
    assert state_of(runtime, 1) is State.ACTIVE and granter.calls["granted"] == 1
    files = wait_for(lambda: slack.uploaded_to(slack.dm_channel(ALICE)))
    assert files[0]["filename"] == "kubeconfig.yaml"

    (posted,) = wait_for(lambda: announcements(slack))
    assert posted["text"].startswith("<!here> :pager: ON-CALL: ")
    rendered = str(posted["blocks"])
    assert ":pager: *ON-CALL* access #1" in rendered and "rotating_light" not in str(posted)
    assert f"because the requester is on call: {desk.name}: {where}" in rendered
    assert "Flagged for review" in rendered and "checkout is down" in rendered
    assert "'actions'" not in rendered  # nothing to decide: it is approved
    ts = wait_for(lambda: [ts for (c, ts) in slack.messages if c == APPROVALS_CHANNEL])[0]
    updated = wait_for(lambda: "Active until" in str(slack.message(APPROVALS_CHANNEL, ts))
                       and slack.message(APPROVALS_CHANNEL, ts))
    assert "*ON-CALL*" in str(updated["blocks"])  # still flagged once active

    detail = f"on call: {desk.name}: {where}"
    events = audit_of(runtime, 1)
    assert events[0][1] == "requested" and events[0][2]["on_call"] == detail
    assert events[1][:2] == ("policy", "approved")
    assert events[1][2] == {"rule": "on-call", "on_call": detail}
    assert "activated" in [action for _, action, _ in events]


@pytest.mark.parametrize(("arrange", "ask", "reason"), [
    (lambda d: d.knows(ALICE_EMAIL), "1h",
     "you are not on call ({service}: not on call in {where})"),
    (lambda d: d.puts_on_call(ALICE_EMAIL), "3h",
     "3h is longer than the 2h that being on call approves by itself"),
], ids=["not on call", "longer than on_call_max_duration"])
def test_otherwise_the_approvers_decide_and_the_requester_hears_why(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, desk: Desk,
        arrange: Callable[[Desk], object], ask: str, reason: str) -> None:
    arrange(desk)
    where = f"escalation policy {POLICY}" if desk.service == "pagerduty" \
        else f"schedule {SCHEDULE}"
    reason = reason.format(service=desk.name, where=where)
    answer = driver.ask(ALICE, f"request staging edit {ask} look at the logs")
    assert answer["text"].startswith("Request #1 filed:")
    assert answer["text"].endswith(
        f":information_source: Not approved by being on call, so the approvers decide: "
        f"{reason}.")
    assert state_of(runtime, 1) is State.PENDING
    (posted,) = wait_for(lambda: announcements(slack))
    assert "<!here>" not in posted["text"] and "ON-CALL" not in str(posted)
    assert "'approve'" in str(posted["blocks"])
    requested = audit_of(runtime, 1)
    assert [(actor, action) for actor, action, _ in requested] == [(ALICE, "requested")]
    assert requested[0][2]["on_call"] == reason
    if ask == "3h":
        assert desk.calls() == 0  # too long: nobody is asked


@pytest.mark.parametrize("service", ["pagerduty"])  # levels are PagerDuty's
def test_pagerduty_level_that_does_not_count(driver: Driver, runtime: SlackRuntime,
                                             desk: Desk) -> None:
    desk.puts_on_call(ALICE_EMAIL, level=2)
    answer = driver.ask(ALICE, "request staging edit 1h secondary on call")
    assert ("Not approved by being on call, so the approvers decide: you are on call only at "
            "level 2; this role counts level 1 (PagerDuty).") in answer["text"]
    assert state_of(runtime, 1) is State.PENDING


FAULTS: dict[str, tuple[Callable[[Desk], None], str]] = {
    "5xx": (lambda d: d.answers(503), "the service failed (503 Service Unavailable)"),
    "500": (lambda d: d.answers(500), "the service failed (500 Internal Server Error)"),
    "401": (Desk.refuses_the_credentials, "the service refused the bot's credentials (401 "),
    "429": (lambda d: d.answers(429), "the service is rate-limiting the bot (429 "),
    "slow": (Desk.is_slow, f"no answer within {TIMEOUT:g}s"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_service_down_or_slow_falls_back_to_the_approvers_and_says_so(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, desk: Desk,
        fault: str) -> None:
    desk.puts_on_call(ALICE_EMAIL)
    arrange, says = FAULTS[fault]
    arrange(desk)
    answer = ask_patiently(driver, ALICE, "request staging edit 1h the pager rang")
    assert answer["text"].startswith("Request #1 filed:")
    assert ("Not approved by being on call, so the approvers decide: whether you are on call "
            f"could not be checked ({desk.name}: {says}") in answer["text"]
    assert state_of(runtime, 1) is State.PENDING  # never approved on doubt
    assert "'approve'" in str(wait_for(lambda: announcements(slack))[0]["blocks"])
    requested = audit_of(runtime, 1)
    assert "could not be checked" in requested[0][2]["on_call"]
    assert "approved" not in [action for _, action, _ in requested]

    desk.heals()  # doubt is not remembered: the next request asks again
    driver.ask(ALICE, "cancel 1")
    answer = driver.ask(ALICE, "request staging edit 1h the pager rang")
    assert "Approved by the policy because you are on call" in answer["text"]
    assert state_of(runtime, 2) is State.ACTIVE


def test_an_answer_is_remembered_for_a_minute(driver: Driver, runtime: SlackRuntime,
                                              desk: Desk) -> None:
    desk.knows(ALICE_EMAIL)
    driver.ask(ALICE, "request staging edit 1h first")
    asked = desk.calls()
    assert asked >= 1
    driver.ask(ALICE, "cancel 1")
    answer = driver.ask(ALICE, "request staging edit 1h again")
    assert "you are not on call" in answer["text"]
    assert desk.calls() == asked  # the second request asked nobody
    assert state_of(runtime, 2) is State.PENDING


def test_no_question_is_asked_inside_the_acknowledgement(
        unattended: SlackRuntime, slack: FakeSlack, desk: Desk) -> None:
    desk.puts_on_call(ALICE_EMAIL)
    url = slack.response_url()
    response = Driver(unattended, slack).dispatch(
        command_body(slack, ALICE, "request staging edit 1h hotfix", url))
    assert response.status == 200
    assert desk.calls() == 0  # acknowledged without asking the on-call service
    worker = unattended.worker().start()
    try:
        answer = wait_for(lambda: slack.responses_to(url))[0]
    finally:
        worker.stop()
    assert "Approved by the policy because you are on call" in answer["text"]
    assert desk.calls() >= 1


def test_what_is_approved_already_or_has_no_on_call_asks_nobody(
        driver: Driver, slack: FakeSlack, runtime: SlackRuntime, desk: Desk) -> None:
    desk.puts_on_call(ALICE_EMAIL)
    answer = driver.ask(ALICE, "request staging view 1h")  # auto_approve_up_to approves
    assert "Active until" in answer["text"] and "on call" not in answer["text"]
    answer = driver.ask(ALICE, "request prod admin 30m --break-glass prod is down")
    assert "Active until" in answer["text"] and "on call" not in answer["text"]
    assert wait_for(lambda: [m for m in slack.called("chat.postMessage")
                             if ":rotating_light: BREAK-GLASS" in m["text"]])
    answer = driver.ask(BOB, "request prod view 1h look")  # no on-call section
    assert "on call" not in answer["text"]
    assert desk.calls() == 0
    assert next(e for e in audit_of(runtime, 2) if e[1] == "approved")[2] == {
        "rule": "break-glass"}
