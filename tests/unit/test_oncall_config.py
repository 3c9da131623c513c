"""``auto_approve_on_call`` and ``on_call_max_duration`` in the file: resolved into each role's
policy like the other policy keys, every mistake named with its field and fix, and a section
whose service has no credentials in the environment reported by ``config check``."""

from __future__ import annotations

import copy
import io
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import (
    ConfigProblems,
    Settings,
    environment_problems,
    load_config,
    load_settings,
    parse_config,
)
from bot.domain.oncall import OnCallPolicy, OnCallTargets, OpsgenieTargets, PagerDutyTargets
from bot.logs import configure
from tests.conftest import TEST_CONFIG

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "k8s-access.yaml"
PAGERDUTY = {"escalation_policies": ["PPLATF1"], "levels": [1, 2]}
OPSGENIE = {"schedules": ["platform-oncall"]}


def with_keys(defaults: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None,
              role: dict[str, Any] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(TEST_CONFIG)
    data["defaults"] = defaults or {}
    data["clusters"]["staging"].update(cluster or {})
    data["clusters"]["staging"]["roles"]["edit"].update(role or {})
    return data


def test_keys_resolve_into_the_policy_nearest_layer_first() -> None:
    config = parse_config(with_keys(
        defaults={"auto_approve_on_call": {"opsgenie": OPSGENIE}},
        cluster={"on_call_max_duration": "2h"},
        role={"auto_approve_on_call": {"pagerduty": PAGERDUTY}}), Path("test.yaml"))
    assert config.policy("staging", "edit").on_call == OnCallPolicy(
        OnCallTargets(pagerduty=PagerDutyTargets(("PPLATF1",), (), frozenset({1, 2}))),
        timedelta(hours=2))
    assert config.policy("staging", "view").on_call == OnCallPolicy(
        OnCallTargets(opsgenie=OpsgenieTargets(("platform-oncall",))), timedelta(hours=2))
    assert config.policy("prod", "view").on_call == OnCallPolicy(
        OnCallTargets(opsgenie=OpsgenieTargets(("platform-oncall",))), timedelta(hours=4))


def test_no_section_no_on_call_and_levels_default_to_the_first() -> None:
    config = parse_config(with_keys(role={"auto_approve_on_call": {
        "pagerduty": {"schedules": ["PSCHED1"]}}}), Path("test.yaml"))
    assert config.policy("staging", "view").on_call is None
    on_call = config.policy("staging", "edit").on_call
    assert on_call is not None and on_call.targets.pagerduty is not None
    assert on_call.targets.pagerduty.levels == frozenset({1})
    assert on_call.max_duration == timedelta(hours=4)


ROLE = "clusters.staging.roles.edit"


@pytest.mark.parametrize(("role", "field", "says"), [
    ({"auto_approve_on_call": {}}, f"{ROLE}.auto_approve_on_call",
     "name the on-call service: a 'pagerduty:' or 'opsgenie:' section"),
    ({"auto_approve_on_call": {"pagerduty": {"levels": [1]}}},
     f"{ROLE}.auto_approve_on_call.pagerduty", "name escalation_policies or schedules"),
    ({"auto_approve_on_call": {"pagerduty": {"escalation_policies": ["Platform team"]}}},
     f"{ROLE}.auto_approve_on_call.pagerduty.escalation_policies",
     "'Platform team' is not a PagerDuty ID (like PABC123)"),
    ({"auto_approve_on_call": {"pagerduty": {**PAGERDUTY, "levels": [0]}}},
     f"{ROLE}.auto_approve_on_call.pagerduty.levels.0", "greater than or equal to 1"),
    ({"auto_approve_on_call": {"opsgenie": {"schedules": []}}},
     f"{ROLE}.auto_approve_on_call.opsgenie.schedules", "at least 1 item"),
    ({"auto_approve_on_call": {"victorops": {}}}, f"{ROLE}.auto_approve_on_call.victorops",
     "unknown field"),
    ({"on_call_max_duration": "4"}, f"{ROLE}.on_call_max_duration",
     "'4' is not a duration"),
    ({"on_call_max_duration": "2h"}, f"{ROLE}.on_call_max_duration",
     "limits auto_approve_on_call, which the role does not have"),
    ({"auto_approve_on_call": {"opsgenie": OPSGENIE}, "max_duration": "2h",
      "on_call_max_duration": "3h"}, f"{ROLE}.on_call_max_duration",
     "is longer than max_duration (2h), which refuses a longer request before on-call is "
     "asked: make it 2h or less"),
], ids=["empty", "no targets", "a name for an ID", "level 0", "no schedules",
        "unknown service", "bad duration", "a limit of nothing", "past max_duration"])
def test_mistakes_name_field_and_fix(role: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ConfigProblems) as raised:
        parse_config(with_keys(role=role), Path("test.yaml"))
    found = [p for p in raised.value.problems if p.field == field]
    assert found, [str(p) for p in raised.value.problems]
    assert says in found[0].message


def test_a_limit_within_max_duration_or_set_wider_is_taken() -> None:
    """Only a role's own on_call_max_duration past its own max_duration is a mistake: one set on
    the cluster serves the cluster's other roles too."""
    config = parse_config(with_keys(
        cluster={"auto_approve_on_call": {"opsgenie": OPSGENIE}, "on_call_max_duration": "6h"},
        role={"max_duration": "2h"}), Path("test.yaml"))
    on_call = config.policy("staging", "edit").on_call
    assert on_call is not None and on_call.max_duration == timedelta(hours=6)
    config = parse_config(with_keys(role={"auto_approve_on_call": {"opsgenie": OPSGENIE},
                                          "max_duration": "2h", "on_call_max_duration": "2h"}),
                          Path("test.yaml"))
    on_call = config.policy("staging", "edit").on_call
    assert on_call is not None and on_call.max_duration == timedelta(hours=2)


def test_a_section_without_its_credentials_is_a_problem_where_it_is_written() -> None:
    config = parse_config(with_keys(
        cluster={"auto_approve_on_call": {"pagerduty": PAGERDUTY, "opsgenie": OPSGENIE}}),
        Path("test.yaml"))
    problems = {p.field: p for p in environment_problems(Settings(), config)}
    pagerduty = problems["clusters.staging.auto_approve_on_call.pagerduty"]
    assert pagerduty.source == "test.yaml"
    assert "needs PAGERDUTY_TOKEN in the environment" in pagerduty.message
    assert "needs OPSGENIE_API_KEY" in \
        problems["clusters.staging.auto_approve_on_call.opsgenie"].message
    given = Settings(pagerduty_token="u+token0123", opsgenie_api_key="og-key-0123456")
    assert not [p for p in environment_problems(given, config) if "on_call" in p.field]


def test_a_credential_with_a_line_break_around_it_is_named() -> None:
    config = parse_config(with_keys(
        cluster={"auto_approve_on_call": {"pagerduty": PAGERDUTY, "opsgenie": OPSGENIE}}),
        Path("test.yaml"))
    padded = Settings(pagerduty_token="u+token0123\n", opsgenie_api_key="  ",
                      gitlab_token=" glpat-0123")
    problems = {p.field: str(p) for p in environment_problems(padded, config)}
    for name in ("PAGERDUTY_TOKEN", "OPSGENIE_API_KEY", "GITLAB_TOKEN"):
        assert problems[name] == (
            f"environment: {name}: has a space or a line break around it (a Secret made from "
            "a file keeps the file's last line break): set it without")
    assert "u+token0123" not in " ".join(problems.values())


def test_the_example_shows_the_keys_and_loads_without_credentials() -> None:
    config = load_config(EXAMPLE)
    on_call = config.policy("production", "deploy").on_call
    assert on_call is not None and on_call.max_duration == timedelta(hours=2)
    assert on_call.targets.pagerduty == PagerDutyTargets(("PPLATF1",), (), frozenset({1, 2}))
    assert on_call.targets.opsgenie == OpsgenieTargets(("platform-oncall",))


def test_settings_read_the_credentials_and_hand_them_to_the_redactor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_TOKEN", "u+pagerduty-secret")
    monkeypatch.setenv("OPSGENIE_API_KEY", "opsgenie-secret")
    monkeypatch.setenv("OPSGENIE_API_URL", "https://api.eu.opsgenie.com")
    settings = Settings()
    assert settings.opsgenie_api_url == "https://api.eu.opsgenie.com"
    assert {"u+pagerduty-secret", "opsgenie-secret"} <= set(settings.secret_values())
    monkeypatch.setenv("PAGERDUTY_API_URL", "http://api.pagerduty.com")
    with pytest.raises(ValueError, match="PagerDuty's API is reached over HTTPS only"):
        Settings()


def test_the_credentials_read_from_the_environment_are_redacted_from_log_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGERDUTY_TOKEN", "u+pd-Secret-0123")
    monkeypatch.setenv("OPSGENIE_API_KEY", "0f1e2d3c-og-secret")
    settings = load_settings()
    output = io.StringIO()
    handler = configure("INFO", "json", settings.secret_values(), stream=output)
    try:
        logging.getLogger("bot.adapters.oncall").warning(
            "GET /oncalls with Authorization: Token token=%s failed; GenieKey %s",
            "u+pd-Secret-0123", "0f1e2d3c-og-secret")
    finally:
        logging.getLogger().removeHandler(handler)
    line = output.getvalue()
    assert "u+pd-Secret-0123" not in line and "0f1e2d3c-og-secret" not in line
    assert "Token token=[redacted]" in line and "GenieKey [redacted]" in line


def test_a_bad_on_call_timeout_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ON_CALL_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ConfigProblems) as raised:
        load_settings()
    (problem,) = raised.value.problems
    assert (problem.field, problem.message) == ("ON_CALL_TIMEOUT_SECONDS",
                                                "must be a number of seconds, like 30")
