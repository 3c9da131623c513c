"""Who is on call, asked of local servers that speak PagerDuty's REST API v2 (through the
``pagerduty`` client library) and Opsgenie's Who-is-on-call API: matches by email, levels,
paging, and every failure (bad token, rate limit, 5xx, a slow answer) an answer of doubt."""

from __future__ import annotations

import copy
import io
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.adapters.oncall.opsgenie import OpsgenieOnCall
from bot.adapters.oncall.pagerduty import PagerDutyOnCall
from bot.adapters.oncall.service import OnCallServices
from bot.app import build_context
from bot.checks import connect
from bot.checks.oncall import check_opsgenie, check_pagerduty
from bot.config import Config, Settings, parse_config
from bot.domain.oncall import (
    OnCallAnswer,
    OnCallStatus,
    OnCallTargets,
    OpsgenieTargets,
    PagerDutyTargets,
    evaluate,
)
from bot.domain.ports import Granter
from bot.fakes.opsgenie import API_KEY, FakeOpsgenie
from bot.fakes.pagerduty import TOKEN, FakePagerDuty
from bot.logs import configure
from tests.conftest import PD_OTHER_POLICY, PD_POLICY, PD_SCHEDULE, TEST_CONFIG
from tests.fakes.ports import InMemoryGranter
from tests.integration.test_connect_check import Recorder

ALICE, BOB = "alice@example.com", "bob@example.com"
POLICY, OTHER_POLICY, SCHEDULE = PD_POLICY, PD_OTHER_POLICY, PD_SCHEDULE
OPSGENIE = {"schedules": ["platform-oncall"]}


def pagerduty_targets(*, levels: tuple[int, ...] = (1,), schedules: tuple[str, ...] = ()
                      ) -> OnCallTargets:
    return OnCallTargets(pagerduty=PagerDutyTargets((POLICY,), schedules, frozenset(levels)))


def ask_pagerduty(fake: FakePagerDuty, email: str, targets: OnCallTargets, *,
                  token: str = TOKEN, timeout: float = 3.0) -> OnCallAnswer:
    return PagerDutyOnCall(token, fake.url, timeout=timeout).check(email, targets)


def test_pagerduty_on_call_at_a_level_that_counts(pd: FakePagerDuty) -> None:
    alice = pd.add_user("Alice Example", ALICE)
    pd.put_on_call(alice, POLICY, level=2, schedule=SCHEDULE)
    answer = ask_pagerduty(pd, "Alice@Example.com", pagerduty_targets(levels=(1, 2)))
    assert answer.status is OnCallStatus.ON_CALL
    assert answer.detail == ("escalation policy Platform (PPLATF1), level 2, schedule "
                             "Platform primary (PSCHED1)")
    oncalls = pd.called("/oncalls")
    assert oncalls[0]["user_ids[]"] == [alice]
    assert oncalls[0]["escalation_policy_ids[]"] == [POLICY]
    assert oncalls[0]["earliest"] == ["true"]
    assert pd.called("/users")[0]["query"] == ["Alice@Example.com"]


@pytest.mark.parametrize(("on_call", "levels", "status", "detail"), [
    ([(POLICY, 3)], (1, 2), OnCallStatus.LEVEL_NOT_COUNTED,
     "on call only at level 3; this role counts level 1 or 2"),
    ([(OTHER_POLICY, 1)], (1,), OnCallStatus.NOT_ON_CALL,
     "not on call in escalation policy PPLATF1"),
    ([], (1,), OnCallStatus.NOT_ON_CALL, "not on call in escalation policy PPLATF1"),
], ids=["a level that does not count", "another policy", "nowhere"])
def test_pagerduty_not_on_call_says_why(pd: FakePagerDuty, on_call: list[tuple[str, int]],
                                        levels: tuple[int, ...], status: OnCallStatus,
                                        detail: str) -> None:
    alice = pd.add_user("Alice", ALICE)
    for policy, level in on_call:
        pd.put_on_call(alice, policy, level)
    answer = ask_pagerduty(pd, ALICE, pagerduty_targets(levels=levels))
    assert (answer.status, answer.detail) == (status, detail)


def test_pagerduty_schedule_counts_at_any_level(pd: FakePagerDuty) -> None:
    alice = pd.add_user("Alice", ALICE)
    pd.put_on_call(alice, OTHER_POLICY, level=3, schedule=SCHEDULE)
    targets = OnCallTargets(pagerduty=PagerDutyTargets((), (SCHEDULE,)))
    assert ask_pagerduty(pd, ALICE, targets).is_on_call
    assert pd.called("/oncalls")[0]["schedule_ids[]"] == [SCHEDULE]


def test_pagerduty_unknown_email_and_a_near_match(pd: FakePagerDuty) -> None:
    pd.add_user("Malice", "m" + ALICE)  # matches the query, not the address
    answer = ask_pagerduty(pd, ALICE, pagerduty_targets())
    assert answer.status is OnCallStatus.NOT_ON_CALL
    assert answer.detail == f"no PagerDuty user has the email {ALICE}"


def test_pagerduty_pages_through_users_and_on_calls(pd: FakePagerDuty) -> None:
    pd.max_limit = 2
    for prefix in "abc":
        pd.add_user(prefix.upper(), f"{prefix}.{ALICE}")
    alice = pd.add_user("Alice", ALICE)  # on the second page of the query's matches
    for level in (4, 5, 6):
        pd.put_on_call(alice, POLICY, level)
    pd.put_on_call(alice, POLICY, 1)  # on the second page of her on-calls
    assert ask_pagerduty(pd, ALICE, pagerduty_targets()).is_on_call
    assert [q["offset"] for q in pd.called("/users")] == [["0"], ["2"]]
    assert [q["offset"] for q in pd.called("/oncalls")] == [["0"], ["2"]]


@pytest.mark.parametrize(("status", "reason"), [
    (401, "the service refused the bot's credentials (401 Authentication failed)"),
    (403, "the bot's credentials may not read this (403 Access Denied)"),
    (429, "the service is rate-limiting the bot (429 Rate Limit Exceeded)"),
    (500, "the service failed (500 Internal Server Error)"),
    (503, "the service failed (503 Service Unavailable)"),
])
def test_pagerduty_failures_are_doubt(pd: FakePagerDuty, status: int, reason: str) -> None:
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    pd.fail("/oncalls", status)
    answer = ask_pagerduty(pd, ALICE, pagerduty_targets())
    assert (answer.status, answer.detail) == (OnCallStatus.UNKNOWN, reason)


def test_pagerduty_rate_limit_is_retried_once(pd: FakePagerDuty) -> None:
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    pd.fail("/oncalls", 429, times=1)
    assert ask_pagerduty(pd, ALICE, pagerduty_targets()).is_on_call
    assert len(pd.called("/oncalls")) == 2


def test_pagerduty_bad_token_slow_answer_and_nobody_listening(pd: FakePagerDuty) -> None:
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    refused = ask_pagerduty(pd, ALICE, pagerduty_targets(), token="not-the-token")
    assert refused.status is OnCallStatus.UNKNOWN and "401" in refused.detail
    pd.slow(2.0)
    slow = ask_pagerduty(pd, ALICE, pagerduty_targets(), timeout=0.3)
    assert (slow.status, slow.detail) == (OnCallStatus.UNKNOWN, "no answer within 0.3s")
    pd.stop()
    gone = PagerDutyOnCall(TOKEN, pd.url, timeout=0.5).check(ALICE, pagerduty_targets())
    assert gone.status is OnCallStatus.UNKNOWN


def test_opsgenie_by_name_and_by_id(og: FakeOpsgenie) -> None:
    platform = og.add_schedule("platform-oncall", [ALICE])
    og.add_schedule("data-oncall", [BOB])
    client = OpsgenieOnCall(API_KEY, og.url)
    by_name = client.check("ALICE@example.com",
                           OnCallTargets(opsgenie=OpsgenieTargets(("data-oncall",
                                                                   "platform-oncall"))))
    assert (by_name.status, by_name.detail) == (OnCallStatus.ON_CALL,
                                                "schedule platform-oncall")
    by_id = client.check(ALICE, OnCallTargets(opsgenie=OpsgenieTargets((platform.id,))))
    assert by_id.is_on_call
    queries = [q for _, q in og.calls]
    assert [q["scheduleIdentifierType"] for q in queries] == [["name"], ["name"], ["id"]]
    assert all(q["flat"] == ["true"] for q in queries)
    nobody = client.check(BOB, OnCallTargets(opsgenie=OpsgenieTargets(("platform-oncall",))))
    assert (nobody.status, nobody.detail) == (OnCallStatus.NOT_ON_CALL,
                                              "not on call in schedule platform-oncall")


@pytest.mark.parametrize(("status", "reason"), [
    (401, "the service refused the bot's credentials (401 Could not authenticate)"),
    (429, "the service is rate-limiting the bot (429 Rate limit exceeded)"),
    (500, "the service failed (500 Internal Server Error)"),
    (503, "the service failed (503 Service Unavailable)"),
])
def test_opsgenie_failures_are_doubt(og: FakeOpsgenie, status: int, reason: str) -> None:
    og.add_schedule("platform-oncall", [ALICE])
    og.fail(status, times=1)
    answer = OpsgenieOnCall(API_KEY, og.url).check(
        ALICE, OnCallTargets(opsgenie=OpsgenieTargets(("platform-oncall",))))
    assert (answer.status, answer.detail) == (OnCallStatus.UNKNOWN, reason)


def test_opsgenie_bad_key_unknown_schedule_forbidden_and_slow(og: FakeOpsgenie) -> None:
    schedule = og.add_schedule("platform-oncall", [ALICE])
    targets = OnCallTargets(opsgenie=OpsgenieTargets(("platform-oncall",)))
    bad_key = OpsgenieOnCall("wrong", og.url).check(ALICE, targets)
    assert bad_key.detail == ("the service refused the bot's credentials (401 Could not "
                              "authenticate)")
    unknown = OpsgenieOnCall(API_KEY, og.url).check(
        ALICE, OnCallTargets(opsgenie=OpsgenieTargets(("no-such",))))
    assert unknown.detail == "not found (404 Schedule with identifier [no-such] not found)"
    schedule.readable_by = {"another-teams-key"}
    forbidden = OpsgenieOnCall(API_KEY, og.url).check(ALICE, targets)
    assert forbidden.status is OnCallStatus.UNKNOWN and "403" in forbidden.detail
    schedule.readable_by = None
    og.slow(2.0)
    slow = OpsgenieOnCall(API_KEY, og.url, timeout=0.3).check(ALICE, targets)
    assert (slow.status, slow.detail) == (OnCallStatus.UNKNOWN, "no answer within 0.3s")


def test_both_services_cached_for_a_minute_and_doubt_asked_again(
        pd: FakePagerDuty, og: FakeOpsgenie) -> None:
    pd.add_user("Alice", ALICE)
    og.add_schedule("platform-oncall", [ALICE])
    now = [1000.0]
    services = OnCallServices(PagerDutyOnCall(TOKEN, pd.url), OpsgenieOnCall(API_KEY, og.url),
                              clock=lambda: now[0])
    targets = OnCallTargets(pagerduty=PagerDutyTargets((POLICY,)),
                            opsgenie=OpsgenieTargets(("platform-oncall",)))
    first = services.check(ALICE, targets)
    assert first.is_on_call and first.service == "Opsgenie"
    calls = len(pd.calls) + len(og.calls)
    now[0] += 59
    assert services.check("Alice@example.com ", targets) == first
    assert len(pd.calls) + len(og.calls) == calls  # from the cache
    now[0] += 2
    og.fail(503)
    doubt = services.check(ALICE, targets)  # a minute on: asked again, and in doubt
    assert doubt.status is OnCallStatus.UNKNOWN
    assert doubt.service == "Opsgenie" and "503" in doubt.detail
    calls = len(og.calls)
    og.heal()
    assert services.check(ALICE, targets).is_on_call  # doubt is not remembered
    assert len(og.calls) == calls + 1


def test_a_service_without_credentials_is_doubt_naming_the_variable() -> None:
    services = OnCallServices(None, None)
    answer = services.check(ALICE, OnCallTargets(pagerduty=PagerDutyTargets((POLICY,))))
    assert (answer.status, answer.detail) == (OnCallStatus.UNKNOWN,
                                              "PAGERDUTY_TOKEN is not set")


def test_tokens_never_reach_the_log(pd: FakePagerDuty, og: FakeOpsgenie) -> None:
    output = io.StringIO()
    handler = configure("DEBUG", "console", [TOKEN, API_KEY], stream=output)
    try:
        logging.getLogger("probe").info("headers: {'Authorization': 'Token token=%s'} "
                                        "Authorization: GenieKey %s", TOKEN, API_KEY)
        # Keys the settings do not know (an old one, another installation's) too:
        logging.getLogger("probe").info("{'Authorization': 'Token token=u+oldKey12345'} "
                                        "Authorization: GenieKey 1c2d3e4f-aaaa-bbbb")
        pd.fail("/oncalls", 429)
        ask_pagerduty(pd, ALICE, pagerduty_targets())
        pd.add_user("Alice", ALICE)
        ask_pagerduty(pd, ALICE, pagerduty_targets())  # the library logs the 429s
    finally:
        logging.getLogger().removeHandler(handler)
    text = output.getvalue()
    assert "429" in text and "[redacted]" in text
    assert TOKEN not in text and API_KEY not in text
    assert "u+oldKey12345" not in text and "1c2d3e4f-aaaa-bbbb" not in text


# --- config check --connect and the composition root ------------------------------------


def on_call_config(pd_section: dict[str, Any] | None, og_section: dict[str, Any] | None
                   ) -> Config:
    data = copy.deepcopy(TEST_CONFIG)
    section = {k: v for k, v in (("pagerduty", pd_section), ("opsgenie", og_section)) if v}
    data["clusters"]["staging"]["roles"]["edit"]["auto_approve_on_call"] = section
    return parse_config(data, Path("test.yaml"))


def test_connect_checks_every_policy_and_schedule(pd: FakePagerDuty, og: FakeOpsgenie) -> None:
    og.add_schedule("platform-oncall", [ALICE])
    og.add_schedule("hidden", []).readable_by = set()
    config = on_call_config({"escalation_policies": [POLICY, "PNOPE01"],
                             "schedules": [SCHEDULE]},
                            {"schedules": ["platform-oncall", "hidden", "no-such"]})
    settings = Settings(pagerduty_token=TOKEN, pagerduty_api_url=pd.url,
                        opsgenie_api_key=API_KEY, opsgenie_api_url=og.url)
    recorder = Recorder()
    made = connect(settings, config, recorder, timeout=2.0)
    mine = [(f.target, f.check, f.ok, f.detail) for f in made
            if f.target in ("PagerDuty", "Opsgenie")]
    assert mine == [
        ("PagerDuty", "escalation policy PPLATF1", True, "Platform"),
        ("PagerDuty", "escalation policy PNOPE01", False,
         "not found (404 Not Found): no such escalation policy, or the token cannot see it"),
        ("PagerDuty", "schedule PSCHED1", True, "Platform primary"),
        ("Opsgenie", "schedule platform-oncall", True, "platform-oncall: 1 on call now"),
        ("Opsgenie", "schedule hidden", False,
         "the bot's credentials may not read this (403 You are not authorized to take this "
         "action.)"),
        ("Opsgenie", "schedule no-such", False,
         "not found (404 Schedule with identifier [no-such] not found)"),
    ]
    assert ("PagerDuty", pd.url) in [(t[0], t[1]) for t in recorder.targets]
    assert ("PagerDuty", pd.url, "the token, 2 escalation policies and 1 schedule") \
        in recorder.targets
    assert ("Opsgenie", og.url, "the key and 3 schedules") in recorder.targets


def test_connect_stops_at_a_refused_key(pd: FakePagerDuty, og: FakeOpsgenie) -> None:
    config = on_call_config({"escalation_policies": [POLICY, OTHER_POLICY]},
                            {"schedules": ["a", "b"]})
    settings = Settings(pagerduty_token="u+wrong-token", pagerduty_api_url=pd.url,
                        opsgenie_api_key="wrong-key", opsgenie_api_url=og.url)
    pagerduty = check_pagerduty(settings, config, Recorder(), timeout=2.0).made
    assert [(f.check, f.ok) for f in pagerduty] == [("PagerDuty token", False)]
    assert "401 Authentication failed" in pagerduty[0].detail
    assert "PAGERDUTY_TOKEN" in pagerduty[0].fix
    opsgenie = check_opsgenie(settings, config, Recorder(), timeout=2.0).made
    assert [(f.check, f.ok) for f in opsgenie] == [("Opsgenie key", False)]
    missing = check_opsgenie(Settings(), config, Recorder(), timeout=2.0).made
    assert missing[0].detail == "OPSGENIE_API_KEY is not set"
    assert len(og.calls) == 1


def test_the_composition_root_builds_on_call_only_when_a_role_uses_it(
        engine: Engine, pd: FakePagerDuty) -> None:
    settings = Settings(pagerduty_token=TOKEN, pagerduty_api_url=pd.url)
    granters: dict[str, Granter] = {"staging": InMemoryGranter(), "prod": InMemoryGranter()}
    plain = build_context(settings, parse_config(TEST_CONFIG, Path("test.yaml")),
                          engine=engine, granters=granters)
    assert plain.on_call is None
    ctx = build_context(settings, on_call_config({"escalation_policies": [POLICY]}, OPSGENIE),
                        engine=engine, granters=granters)
    assert isinstance(ctx.on_call, OnCallServices)
    assert isinstance(ctx.on_call.pagerduty, PagerDutyOnCall)
    assert ctx.on_call.opsgenie is None  # no OPSGENIE_API_KEY: that part answers with doubt
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    policy = ctx.config.policy("staging", "edit").on_call
    assert policy is not None
    decision = evaluate(ctx.on_call, policy, ALICE, timedelta(hours=1))
    assert decision.approved and "Platform (PPLATF1), level 1" in decision.detail


def test_opsgenie_a_schedule_that_fails_never_hides_another_that_says_yes(
        og: FakeOpsgenie) -> None:
    og.add_schedule("data-oncall", [BOB])
    og.add_schedule("platform-oncall", [ALICE])
    client = OpsgenieOnCall(API_KEY, og.url)
    targets = OnCallTargets(opsgenie=OpsgenieTargets(("data-oncall", "platform-oncall")))
    og.fail(503, times=1)  # data-oncall's answer
    assert client.check(ALICE, targets).is_on_call
    og.fail(503, times=1)
    doubt = client.check(BOB, targets)  # on call in the one that failed, for all we know
    assert (doubt.status, doubt.detail) == (
        OnCallStatus.UNKNOWN, "schedule data-oncall: the service failed (503 Service "
                              "Unavailable)")
    typo = OnCallTargets(opsgenie=OpsgenieTargets(("platfrom-oncall", "platform-oncall")))
    assert client.check(ALICE, typo).is_on_call
    calls = len(og.calls)
    refused = OpsgenieOnCall("wrong", og.url).check(ALICE, targets)
    assert refused.detail.startswith("the service refused the bot's credentials")
    assert len(og.calls) == calls + 1  # a refused key is not tried on every schedule


def test_pagerduty_policies_failing_never_hide_a_schedule_that_says_yes(
        pd: FakePagerDuty) -> None:
    alice = pd.add_user("Alice", ALICE)
    pd.put_on_call(alice, OTHER_POLICY, level=3, schedule=SCHEDULE)
    targets = pagerduty_targets(schedules=(SCHEDULE,))
    pd.fail("/oncalls", 503, times=1)  # the escalation policies' question
    assert ask_pagerduty(pd, ALICE, targets).is_on_call
    pd.add_user("Bob", BOB)
    pd.fail("/oncalls", 503, times=1)
    doubt = ask_pagerduty(pd, BOB, targets)
    assert (doubt.status, doubt.detail) == (OnCallStatus.UNKNOWN,
                                            "the service failed (503 Service Unavailable)")


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_no_requester_email_in_the_log_of_an_on_call_question(
        pd: FakePagerDuty, level: str) -> None:
    output = io.StringIO()
    handler = configure(level, "console", [TOKEN], stream=output)
    try:
        pd.add_user("Alice", ALICE)
        ask_pagerduty(pd, ALICE, pagerduty_targets())
    finally:
        logging.getLogger().removeHandler(handler)
        configure("INFO", "console", [])
        logging.getLogger().removeHandler(handler)
    text = output.getvalue()
    assert "alice%40example.com" not in text and ALICE not in text


# --- the services' edges: rate limits that ask to wait, refused credentials, one address
# --- for two accounts --------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["30", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_pagerduty_rate_limit_asking_a_long_wait_is_doubt_at_once(
        pd: FakePagerDuty, retry_after: str) -> None:
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    pd.fail("/oncalls", 429, retry_after=retry_after)
    started = time.monotonic()
    answer = ask_pagerduty(pd, ALICE, pagerduty_targets(schedules=(SCHEDULE,)))
    assert time.monotonic() - started < 1.0  # neither waited out nor retried
    assert answer.status is OnCallStatus.UNKNOWN
    assert answer.detail.startswith("the service is rate-limiting the bot (429 Rate Limit "
                                    "Exceeded); it asks to wait ")
    assert len(pd.called("/oncalls")) == 1  # the schedules would meet the same limit


def test_pagerduty_rate_limit_asking_a_short_wait_is_retried(pd: FakePagerDuty) -> None:
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    pd.fail("/oncalls", 429, times=1, retry_after="0")
    assert ask_pagerduty(pd, ALICE, pagerduty_targets()).is_on_call
    assert len(pd.called("/oncalls")) == 2


def test_opsgenie_rate_limit_says_how_long_and_ends_the_check(og: FakeOpsgenie) -> None:
    og.add_schedule("data-oncall", [BOB])
    og.add_schedule("platform-oncall", [ALICE])
    og.fail(429, retry_after=45)
    answer = OpsgenieOnCall(API_KEY, og.url).check(
        ALICE, OnCallTargets(opsgenie=OpsgenieTargets(("data-oncall", "platform-oncall"))))
    assert (answer.status, answer.detail) == (
        OnCallStatus.UNKNOWN, "the service is rate-limiting the bot (429 Rate limit exceeded); "
                              "it asks to wait 45s")
    assert len(og.calls) == 1


def test_a_refused_token_ends_the_check_at_its_first_call(pd: FakePagerDuty,
                                                          og: FakeOpsgenie) -> None:
    pd.put_on_call(pd.add_user("Alice", ALICE), POLICY, 1)
    pd.fail("/oncalls", 401)
    refused = ask_pagerduty(pd, ALICE, pagerduty_targets(schedules=(SCHEDULE,)))
    assert refused.detail == ("the service refused the bot's credentials (401 Authentication "
                              "failed)")
    assert len(pd.called("/oncalls")) == 1
    og.add_schedule("data-oncall", [BOB])
    og.add_schedule("platform-oncall", [ALICE])
    OpsgenieOnCall("wrong", og.url).check(
        ALICE, OnCallTargets(opsgenie=OpsgenieTargets(("data-oncall", "platform-oncall"))))
    assert len(og.calls) == 1


def test_pagerduty_an_address_two_accounts_share_asks_about_both(pd: FakePagerDuty) -> None:
    """The query's matches page by page; both accounts with Alice's address (in any case) are
    asked about, so the one on call is found whichever comes first."""
    pd.max_limit = 2
    pd.add_user("Alice (old)", ALICE)
    pd.add_user("Malice", "m" + ALICE)
    second = pd.add_user("Alice", ALICE.upper())  # on the second page
    pd.put_on_call(second, POLICY, 1)
    assert ask_pagerduty(pd, ALICE, pagerduty_targets()).is_on_call
    [asked] = pd.called("/oncalls")
    assert sorted(asked["user_ids[]"]) == ["PU00001", "PU00003"]
