"""Table-driven: what a click may name (bot.adapters.slack.clicks), with no Slack at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.slack import clicks
from bot.config import parse_config
from bot.domain import lifecycle
from bot.domain.model import AccessRequest, Actor
from tests.conftest import TEST_CONFIG

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
STAGING_CHANNEL = "C0APPROVE"
CONFIG = parse_config({**TEST_CONFIG, "clusters": {
    **TEST_CONFIG["clusters"],
    "staging": {**TEST_CONFIG["clusters"]["staging"], "approvers_channel": STAGING_CHANNEL}}},
    Path("t.yaml"))


def filed(cluster: str, role: str, duration: timedelta) -> AccessRequest:
    request = lifecycle.file_request(policy=CONFIG.policy(cluster, role), requester=Actor("U0A"),
                                     subject="s", duration=duration, reason="x", now=NOW)
    request.id = 1
    return request


def action(action_id: str, value: str, block_id: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"action_id": action_id}
    if block_id is not None:
        found["block_id"] = block_id
    if action_id == "approve_for":
        found["selected_option"] = {"value": value}
    else:
        found["value"] = value
    return found


@pytest.mark.parametrize(("action_id", "value", "block_id", "expected"), [
    ("approve", "1", None, 1),
    ("approve", "2147483647", "approve:2147483647", 2147483647),
    ("revoke", "12", "review:12", 12),
    ("extend", "12", "extend:12", 12),
    ("revoke", "12", "extend:12", 12),          # Revoke sits in the Extend button's block
    ("extend", "12", "Ab3xZ", 12),              # a block Slack named
    ("approve_for", "12:1h", "approve_for:12", 12),
    ("approve", "2147483648", None, None),
    ("approve", "0", None, None),
    ("approve", "012", None, None),
    ("approve", "#12", None, None),
    ("approve", "12 ", None, None),
    ("approve", "1e3", None, None),
    ("approve", '{"id": 12}', None, None),
    ("approve", "١٢", None, None),               # Arabic-Indic digits
    ("approve", "12", "approve:13", None),
    ("keep", "12", "review:13", None),
    ("approve_for", "12:1h", "approve_for:13", None),
    ("approve_for", "x:1h", "approve_for:12", None),
    ("approve_for", ":1h", None, None),
])
def test_the_request_a_click_names(action_id: str, value: str, block_id: str | None,
                                   expected: int | None) -> None:
    if expected is None:
        with pytest.raises(clicks.BrokenButton) as refused:
            clicks.request_id(action(action_id, value, block_id))
        assert refused.value.message.startswith("That button is broken or out of date; type "
                                                "`/k8s-access ")
    else:
        assert clicks.request_id(action(action_id, value, block_id)) == expected


def body(action_id: str, value: str, channel: str | None = None, *,
         ephemeral: bool = False, home: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {"actions": [action(action_id, value)]}
    if channel:
        found["channel"] = {"id": channel}
        found["container"] = {"type": "message", "is_ephemeral": ephemeral}
    if home:
        found["view"] = {"type": "home"}
    return found


H = timedelta(hours=1)


@pytest.mark.parametrize(("cluster", "role", "click", "fine"), [
    ("staging", "edit", body("approve", "1", STAGING_CHANNEL), True),
    ("prod", "view", body("approve", "1", STAGING_CHANNEL), False),  # another cluster's
    ("prod", "view", body("keep", "1", STAGING_CHANNEL), False),
    ("prod", "view", body("approve", "1", "D0BOB"), True),          # a DM: no channel's
    ("prod", "view", body("approve", "1", "C0GENERAL"), True),       # nobody's channel
    ("prod", "view", body("cancel", "1", STAGING_CHANNEL, ephemeral=True), True),
    ("prod", "view", body("cancel", "1", STAGING_CHANNEL, home=True), True),
    ("staging", "edit", body("approve_for", "1:1h", STAGING_CHANNEL), True),
    ("staging", "edit", body("approve_for", "1:15m", STAGING_CHANNEL), True),
    ("staging", "edit", body("approve_for", "1:90m", STAGING_CHANNEL), False),  # not offered
    ("staging", "edit", body("approve_for", "1:60m", STAGING_CHANNEL), False),  # not as written
    ("staging", "edit", body("approve_for", "1:2h", STAGING_CHANNEL), False),  # as asked
    ("staging", "edit", body("approve_for", "1:4h", STAGING_CHANNEL), False),  # more
    ("staging", "edit", body("approve_for", "1:45m", STAGING_CHANNEL), False),  # not offered
    ("staging", "edit", body("approve_for", "1:zz", STAGING_CHANNEL), False),
    ("staging", "edit", body("approve_for", "1:", STAGING_CHANNEL), False),
    ("staging", "edit", body("approve_for", "1:9999999999999999999w", STAGING_CHANNEL), False),
])
def test_where_a_clicked_request_may_stand(cluster: str, role: str, click: dict[str, Any],
                                           fine: bool) -> None:
    request = filed(cluster, role, 2 * H)
    if fine:
        clicks.check_request(click, request, CONFIG)
    else:
        with pytest.raises(clicks.BrokenButton):
            clicks.check_request(click, request, CONFIG)


@pytest.mark.parametrize(("value", "block_id", "expected"), [
    ("U0ALICE01", "link:U0ALICE01", "U0ALICE01"),
    ("W0ALICE01", None, "W0ALICE01"),
    ("U0ALICE01", "link:U0BOB0002", None),
    ("S0SRE0001", None, None),
    ("garbage", None, None),
    ('{"a": 1}', None, None),
    ("", None, None),
])
def test_the_person_a_confirm_link_names(value: str, block_id: str | None,
                                         expected: str | None) -> None:
    clicked = {"action_id": "confirm_link", "value": value}
    if block_id:
        clicked["block_id"] = block_id
    if expected is None:
        with pytest.raises(clicks.BrokenButton):
            clicks.linked_user(clicked)
    else:
        assert clicks.linked_user(clicked) == expected
