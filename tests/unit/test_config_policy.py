"""The policy keys of part two in the file: layered like the others, and every mistake named
with file, field, value and fix."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigProblems, load_config, parse_config
from bot.domain.policy import EscalationStep
from bot.domain.reasons import nested_repetition
from tests.unit.test_config import EXAMPLE, with_changes

SOURCE = Path("k8s-access.yaml")
STEP = {"after": "30m", "approvers": ["U0LEAD0001"]}


KEYS = ("requesters", "request_for_others", "max_schedule_ahead", "escalation",
        "reason_pattern", "reason_hint", "ticket_url")


def test_the_example_shows_every_key_and_is_valid_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for key in KEYS:
        assert f"{key}:" in text
    config = load_config(EXAMPLE)
    admin = config.policy("production", "admin")
    assert admin.requesters == {"U0PLATFORM1", "U0ALICE0001", "U0BOB000002"}
    assert admin.escalation == (EscalationStep(timedelta(minutes=30),
                                               frozenset({"U0DAVE00004"})),)
    assert config.policy("staging", "view").request_for_others
    assert config.policy("staging", "edit").requesters is None
    assert config.policy("staging", "edit").max_schedule_ahead == timedelta(days=14)
    keys = "|".join(KEYS)
    uncommented = re.sub(rf"(?m)^(\s*)# ((?:{keys}):|  approvers:|- after:)", r"\1\2", text)
    assert uncommented != text
    path = tmp_path / "k8s-access.yaml"
    path.write_text(uncommented)
    config = load_config(path)
    deploy = config.policy("production", "deploy")
    assert deploy.ticket_url == "https://jira.example.com/browse/{ticket}"
    assert deploy.reason_pattern and deploy.reason_hint
    assert [s.after for s in deploy.escalation] == [timedelta(minutes=30), timedelta(hours=2)]
    assert config.policy("staging", "edit").requesters == {"S0ENGINEERS"}


def test_keys_are_layered_defaults_cluster_role() -> None:
    data = with_changes(
        defaults={"requesters": ["S0ENG00001"], "max_schedule_ahead": "3d",
                  "reason_pattern": "[A-Z]+-[0-9]+", "escalation": [STEP]},
        clusters__prod__request_for_others=True,
        clusters__prod__ticket_url="https://t.example/{ticket}",
        clusters__prod__roles__admin__requesters=["U0ONCALL01"],
        clusters__prod__roles__admin__reason_pattern="",
        clusters__prod__roles__admin__ticket_url="",
    )
    config = parse_config(data, SOURCE)
    view, admin = config.policy("prod", "view"), config.policy("prod", "admin")
    assert view.requesters == {"S0ENG00001"} and admin.requesters == {"U0ONCALL01"}
    assert view.request_for_others and not config.policy("staging", "view").request_for_others
    assert view.max_schedule_ahead == timedelta(days=3)
    assert view.reason_pattern == "[A-Z]+-[0-9]+" and admin.reason_pattern is None
    assert view.ticket_url == "https://t.example/{ticket}" and admin.ticket_url is None
    assert view.escalation == (EscalationStep(timedelta(minutes=30), frozenset({"U0LEAD0001"})),)
    assert "S0ENG00001" in config.all_approver_groups()


def test_each_policy_knows_which_principals_it_names_are_user_groups() -> None:
    """The domain tells users from user groups by what the configuration says, never by an
    ID's form: each policy carries the groups among its approvers, cluster approvers,
    requesters and escalation steps."""
    config = parse_config(with_changes(
        clusters__prod__approvers=["U0BOB000002", "S0OPS00001"],
        clusters__prod__roles__view__requesters=["U0ALICE0001", "S0ENG00001"],
        clusters__prod__roles__view__escalation=[{"after": "30m", "approvers": ["S0LEAD0001"]}],
    ), SOURCE)
    view, admin = config.policy("prod", "view"), config.policy("prod", "admin")
    assert view.user_groups == {"S0OPS00001", "S0ENG00001", "S0LEAD0001"}
    assert admin.user_groups == {"S0OPS00001"}
    assert {"S0OPS00001", "S0ENG00001", "S0LEAD0001"} <= config.all_approver_groups()


@pytest.mark.parametrize(("changes", "says"), [
    ({"clusters__prod__requesters": ["bob"]},
     "k8s-access.yaml: clusters.prod.requesters: 'bob' is not a Slack user ID (U…/W…) or user "
     "group ID (S…)"),
    ({"clusters__prod__requesters": []},
     "clusters.prod.requesters: is empty, so nobody may ask: leave it out"),
    ({"clusters__prod__requesters": "U0BOB0002"},
     "clusters.prod.requesters = 'U0BOB0002': must be a list"),
    ({"clusters__prod__request_for_others": "maybe"},
     "clusters.prod.request_for_others = 'maybe': must be true or false"),
    ({"defaults": {"max_schedule_ahead": "2 weeks"}},
     "defaults.max_schedule_ahead: '2 weeks' is not a duration: write it like"),
    ({"clusters__prod__reason_pattern": "(OPS-[0-9]+"},
     "clusters.prod.reason_pattern = '(OPS-[0-9]+': is not a regular expression "
     "(missing ), unterminated subpattern at position 0): write one like"),
    ({"clusters__prod__reason_pattern": "[A-Z]*"},
     "clusters.prod.reason_pattern = '[A-Z]*': matches an empty reason too"),
    ({"clusters__prod__reason_pattern": "([A-Z]+-?)+[0-9]+"},
     "clusters.prod.reason_pattern = '([A-Z]+-?)+[0-9]+': repeats a part that itself repeats"),
    ({"clusters__prod__reason_pattern": "(?:OPS-(?:[0-9]{1,3},?)+)+"},
     "make the inner repetition possessive ('[A-Z]++') or atomic ('(?>…)')"),
    ({"defaults": {"reason_pattern": r"(\w+ ?){1,20}!"}}, "defaults.reason_pattern = "),
    ({"clusters__prod__roles__view__reason_hint": "name the ticket"},
     "clusters.prod.roles.view.reason_hint = 'name the ticket': is said when a reason does "
     "not match reason_pattern, and the role has none: set reason_pattern"),
    ({"clusters__prod__roles__view__reason_hint": "name the ticket",
      "clusters__prod__roles__view__reason_pattern": ""},
     "clusters.prod.roles.view.reason_hint = 'name the ticket': is said when"),
    ({"clusters__prod__reason_pattern": "X-1",
      "clusters__prod__ticket_url": "https://jira.example.com/browse/"},
     "clusters.prod.ticket_url = 'https://jira.example.com/browse/': must hold {ticket} once"),
    ({"clusters__prod__reason_pattern": "X-1",
      "clusters__prod__ticket_url": "https://t.example/{ticket}/{id}"},
     "must hold {ticket} once, where the ticket goes, and no other {…}"),
    ({"clusters__prod__reason_pattern": "X-1",
      "clusters__prod__ticket_url": "jira.example.com/browse/{ticket}"},
     "clusters.prod.ticket_url = 'jira.example.com/browse/{ticket}': is not a link: write it "
     "as https://"),
    ({"clusters__prod__reason_pattern": "X-1",
      "clusters__prod__ticket_url": "https://t.example/a|b/{ticket}"},
     "clusters.prod.ticket_url = 'https://t.example/a|b/{ticket}': holds a space, '|', '<' "
     "or '>', which would cut the link"),
    ({"clusters__prod__reason_pattern": "X-1",
      "clusters__prod__ticket_url": "https://t.example/?q={ticket} x"},
     "percent-encode them (%20, %7C, %3C, %3E)"),
    ({"clusters__prod__ticket_url": "https://t.example/{ticket}"},
     "clusters.prod.ticket_url = 'https://t.example/{ticket}': clusters.prod.roles.view has no "
     "reason_pattern to find the ticket in a reason: set reason_pattern"),
    ({"clusters__prod__escalation": [{"after": "2h", "approvers": ["U0LEAD0001"]},
                                     {"after": "30m", "approvers": ["S0SRE00001"]}]},
     "clusters.prod.escalation: step 1 (after 30m) does not come after step 0 (after 2h): "
     "list the steps in the order they happen"),
    ({"clusters__prod__escalation": [{"after": "1d", "approvers": ["U0LEAD0001"]}]},
     "clusters.prod.escalation.0.after = 1d: is not before the timeout of "
     "clusters.prod.roles.view (1d), so the step never happens"),
    ({"clusters__prod__escalation": [{"after": "30m", "approvers": ["lead"]}]},
     "clusters.prod.escalation.0.approvers: 'lead' is not a Slack user ID"),
    ({"clusters__prod__escalation": [{"after": "30m", "approvers": []}]},
     "clusters.prod.escalation.0.approvers: is empty: list at least 1 item"),
    ({"clusters__prod__escalation": [{"after": "30m"}]},
     "clusters.prod.escalation.0.approvers: is required: add it"),
    ({"clusters__prod__escalation": [{"after": "30m", "approvers": ["U0LEAD0001"],
                                      "notify": True}]},
     "clusters.prod.escalation.0.notify = true: unknown field"),
    ({"clusters__prod__escalation": {"after": "30m"}},
     "clusters.prod.escalation: must be a list"),
])
def test_mistakes_are_named_with_field_value_and_fix(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigProblems) as error:
        parse_config(with_changes(**changes), SOURCE)
    assert says in str(error.value)
    assert all(str(p).startswith("k8s-access.yaml: ") for p in error.value.problems)


def test_a_layer_problem_is_listed_once_not_per_role() -> None:
    data = with_changes(defaults={"escalation": [{"after": "2d", "approvers": ["U0LEAD0001"]}]})
    with pytest.raises(ConfigProblems) as error:
        parse_config(data, SOURCE)
    fields = [p.field for p in error.value.problems]
    assert fields.count("defaults.escalation.0.after") == 5  # one per role, each says which
    assert len(set(map(str, error.value.problems))) == len(error.value.problems)


@pytest.mark.parametrize("pattern", [
    "([A-Z]+-?)+[0-9]+", "(a+)+$", "(a*)*b", r"(\w{1,3})+x", r"(\w+){1,10}x",
    "(?:x|(?:ab)+)+c", "(?:OPS-(?:[0-9]+,?)+)+",
])
def test_a_pattern_that_can_take_minutes_on_a_reason_is_refused(pattern: str) -> None:
    """Each of these takes seconds to minutes on a reason of 30 to 40 characters that almost
    matches: a typed reason would stop the bot."""
    assert nested_repetition(pattern)


@pytest.mark.parametrize("pattern", [
    "[A-Z]+-[0-9]+", r"(?P<ticket>(OPS|SEC)-\d+)", r"(?:[A-Z]+-\d+,?)?x", "(ab)+c", "(a?)+b",
    r"(\d{1,3}){2}", "(?>[A-Z]+-?)+[0-9]+", "([A-Z]++-?)+[0-9]+", r"(?:(?=\w+)x)+",
])
def test_a_pattern_that_is_quick_on_any_reason_is_accepted(pattern: str) -> None:
    assert not nested_repetition(pattern)
