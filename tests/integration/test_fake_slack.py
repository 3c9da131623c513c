"""The local Slack answers like a workspace: each documented error on demand, Block Kit's limits,
``conversations.info``. Checked through the real ``slack_sdk`` client, as the bot meets it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.fakes.slack import BOT_TOKEN, COMMON_ERRORS, ERRORS, FakeSlack

MEMBER, OUTSIDE, ARCHIVED = "C0MEMBER1", "C0OUTSIDE", "C0ARCHIVE"
USER, OTHER = "U0ALICE01", "U0BOB0002"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(users={USER: {"email": "alice@example.com"}, OTHER: {}},
                     usergroups={"S0GROUP01": [USER]}, channels={MEMBER, ARCHIVED},
                     outside={OUTSIDE}, archived={ARCHIVED},
                     channel_names={MEMBER: "access-approvals"}).start()
    yield fake
    fake.stop()


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    return WebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[])


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# The parameters each method is called with, and the one a failure is arranged for.
CALLS: dict[str, tuple[dict[str, Any], str]] = {
    "chat.postMessage": ({"channel": MEMBER, "text": "hi"}, "channel"),
    "chat.update": ({"channel": MEMBER, "ts": "1.000001", "text": "hi"}, "channel"),
    "chat.postEphemeral": ({"channel": MEMBER, "user": USER, "text": "hi"}, "channel"),
    "conversations.open": ({"users": USER}, "users"),
    "conversations.info": ({"channel": MEMBER}, "channel"),
    "files.getUploadURLExternal": ({"filename": "a.yaml", "length": 3}, "filename"),
    "files.completeUploadExternal": ({"files": json.dumps([{"id": "F1"}]),
                                      "channel_id": MEMBER}, "channel_id"),
    "views.open": ({"trigger_id": "1.2.abc", "view": json.dumps({"type": "modal"})},
                   "trigger_id"),
    "views.update": ({"view_id": "V1", "view": json.dumps({"type": "modal"})}, "view_id"),
    "views.publish": ({"user_id": USER, "view": json.dumps({"type": "home"})}, "user_id"),
    "users.info": ({"user": USER}, "user"),
    "usergroups.users.list": ({"usergroup": "S0GROUP01"}, "usergroup"),
}
DOCUMENTED = [(method, error) for method in sorted(ERRORS) for error in sorted(ERRORS[method])
              if error != "rate_limited"]


@pytest.mark.parametrize(("method", "error"), DOCUMENTED)
def test_each_documented_error_on_demand_for_one_recipient(
        method: str, error: str, slack: FakeSlack, client: WebClient) -> None:
    params, key = CALLS[method]
    other = {**params, key: "D" + OTHER if key.startswith("channel") else OTHER}
    untouched = answer(client, method, other)
    slack.fail(method, error, **{key: params[key]})
    with pytest.raises(SlackApiError) as refused:
        client.api_call(method, params=params)
    assert refused.value.response["error"] == error
    assert answer(client, method, other) == untouched  # somebody else is not concerned


def answer(client: WebClient, method: str, params: dict[str, Any]) -> str:
    """``ok``, or the error Slack answered."""
    try:
        client.api_call(method, params=params)
    except SlackApiError as refused:
        return str(refused.response["error"])
    return "ok"


@pytest.mark.parametrize("error", sorted(COMMON_ERRORS - {"ratelimited"}))
def test_errors_any_method_can_meet(error: str, slack: FakeSlack, client: WebClient) -> None:
    slack.fail("chat.postMessage", error, times=1)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=MEMBER, text="hi")
    assert refused.value.response["error"] == error
    client.chat_postMessage(channel=MEMBER, text="hi")  # once only


def test_rate_limits_and_outages_carry_their_http_status(slack: FakeSlack,
                                                         client: WebClient) -> None:
    slack.fail("conversations.open", "ratelimited", users=USER)
    slack.fail("chat.postMessage", "service_unavailable", channel=MEMBER)
    with pytest.raises(SlackApiError) as limited:
        client.conversations_open(users=USER)
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "1"
    with pytest.raises(SlackApiError) as down:
        client.chat_postMessage(channel=MEMBER, text="hi")
    assert down.value.response.status_code == 503
    slack.heal()
    client.conversations_open(users=USER)
    client.chat_postMessage(channel=MEMBER, text="hi")


def test_an_error_slack_does_not_document_cannot_be_arranged(slack: FakeSlack) -> None:
    with pytest.raises(ValueError, match="does not document"):
        slack.fail("conversations.open", "not_in_channel")
    with pytest.raises(ValueError, match="does not document"):
        slack.fail("users.info", "invalid_blocks")


@pytest.mark.parametrize(("channel", "error"), [
    (OUTSIDE, "not_in_channel"), (ARCHIVED, "is_archived"), ("C0GONE001", "channel_not_found")])
def test_channels_the_bot_cannot_post_in(channel: str, error: str, slack: FakeSlack,
                                         client: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=channel, text="hi")
    assert refused.value.response["error"] == error


def test_users_who_cannot_get_dms(slack: FakeSlack, client: WebClient) -> None:
    slack.deactivated.add(USER)
    slack.bot_users.add(OTHER)
    for user, error in ((USER, "user_disabled"), (OTHER, "cannot_dm_bot")):
        with pytest.raises(SlackApiError) as refused:
            client.conversations_open(users=user)
        assert refused.value.response["error"] == error


def test_a_post_addressed_to_a_user_goes_to_the_dm_with_them(
        slack: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=USER, text="hi")
    dm = slack.dm_channel(USER)
    assert posted["channel"] == dm  # Slack answers the DM's ID, as conversations.open would
    assert slack.message(dm, posted["ts"])["text"] == "hi"
    assert [p["text"] for p in slack.dms_to(USER)] == ["hi"]
    assert slack.addressed_to_users() == [USER] and not slack.called("conversations.open")
    client.chat_update(channel=posted["channel"], ts=posted["ts"], text="changed")
    assert slack.message(dm, posted["ts"])["text"] == "changed"


def test_a_post_addressed_to_a_user_who_cannot_get_dms_is_refused_as_the_dm_is(
        slack: FakeSlack, client: WebClient) -> None:
    slack.deactivated.add(USER)
    slack.bot_users.add(OTHER)
    for user, error in ((USER, "user_disabled"), (OTHER, "cannot_dm_bot")):
        with pytest.raises(SlackApiError) as refused:
            client.chat_postMessage(channel=user, text="hi")
        assert refused.value.response["error"] == error
    assert not slack.messages and not slack.dms_to(USER) and not slack.dms_to(OTHER)


@pytest.mark.parametrize(("method", "error", "match"), [
    ("conversations.open", "user_not_found", {"users": USER}),
    ("conversations.open", "service_unavailable", {"users": USER}),
    ("chat.postMessage", "messages_tab_disabled", {"channel": "D" + USER}),
])
def test_failures_arranged_for_a_dm_apply_to_a_post_addressed_to_its_user(
        method: str, error: str, match: dict[str, str], slack: FakeSlack,
        client: WebClient) -> None:
    slack.fail(method, error, **match)
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=USER, text="hi")
    assert refused.value.response["error"] == error
    assert client.chat_postMessage(channel=OTHER, text="hi")["channel"] == "D" + OTHER


def test_conversations_info(client: WebClient) -> None:
    member = client.conversations_info(channel=MEMBER)["channel"]
    assert (member["name"], member["is_member"], member["is_archived"]) == \
        ("access-approvals", True, False)
    outside = client.conversations_info(channel=OUTSIDE)["channel"]
    assert (outside["is_member"], outside["is_archived"]) == (False, False)
    assert client.conversations_info(channel=ARCHIVED)["channel"]["is_archived"] is True
    with pytest.raises(SlackApiError) as missing:
        client.conversations_info(channel="C0GONE001")
    assert missing.value.response["error"] == "channel_not_found"


@pytest.mark.parametrize(("blocks", "text", "error", "pointer"), [
    ([section("x")] * 51, "hi", "invalid_blocks", "/blocks]"),
    ([section("x" * 3001)], "hi", "invalid_blocks", "/blocks/0/text/text]"),
    ([section("")], "hi", "invalid_blocks", "/blocks/0/text/text]"),
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}], "hi",
     "invalid_blocks", "/blocks/0/fields]"),
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}], "hi",
     "invalid_blocks", "/blocks/0/fields/0/text]"),
    ([{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}], "hi",
     "invalid_blocks", "/blocks/0/text/text]"),
    ([{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "x" * 76}}]}],
     "hi", "invalid_blocks", "/blocks/0/elements/0/text/text]"),
    ([section("x")], "x" * 40_001, "msg_too_long", None),
])
def test_messages_over_slacks_limits_are_refused(
        blocks: list[dict[str, Any]], text: str, error: str, pointer: str | None,
        client: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=MEMBER, text=text, blocks=blocks)
    assert refused.value.response["error"] == error
    if pointer is not None:
        assert any(p.endswith(pointer) for p in refused.value.response["errors"])


def test_messages_at_slacks_limits_are_taken(slack: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel=MEMBER, text="x" * 40_000,
                            blocks=[section("x" * 3000)] * 50)
    posted = client.chat_postMessage(channel=MEMBER, text="hi", blocks=[section("x")])
    update = [section("x")] * 51
    with pytest.raises(SlackApiError) as refused:
        client.chat_update(channel=MEMBER, ts=posted["ts"], text="hi", blocks=update)
    assert refused.value.response["error"] == "invalid_blocks"


def _menu(**element: Any) -> dict[str, Any]:
    """A home view holding one static menu."""
    return {"type": "home", "blocks": [{
        "type": "section", "text": {"type": "mrkdwn", "text": "pick"},
        "accessory": {"type": "static_select", "action_id": "pick", **element}}]}


def _options(*values: str) -> list[dict[str, Any]]:
    return [{"text": {"type": "plain_text", "text": v}, "value": v} for v in values]


def _group(*values: str) -> dict[str, Any]:
    return {"label": {"type": "plain_text", "text": "g"}, "options": _options(*values)}


MANY = [f"ns{n}" for n in range(101)]


@pytest.mark.parametrize(("view", "fits"), [
    (_menu(options=_options(*MANY[:100])), True),
    (_menu(options=_options(*MANY)), False),
    (_menu(options=_options("a", "b"), initial_option=_options("b")[0]), True),
    (_menu(options=_options("a", "b"), initial_option=_options("c")[0]), False),
    (_menu(option_groups=[_group(*MANY[:100]), _group("ns100")],
           initial_option=_options("ns100")[0]), True),
    (_menu(option_groups=[_group(*MANY)]), False),
    (_menu(option_groups=[_group("a")] * 101), False),
    (_menu(options=_options("a"), option_groups=[_group("a")]), False),
])
def test_menus_over_slacks_limits_or_choosing_what_they_do_not_offer_are_refused(
        view: dict[str, Any], fits: bool, client: WebClient) -> None:
    test_views_over_slacks_limits_are_refused(view, fits, client)


@pytest.mark.parametrize(("view", "fits"), [
    ({"type": "home", "blocks": [section("x")] * 100}, True),
    ({"type": "home", "blocks": [section("x")] * 101}, False),
    ({"type": "modal", "title": {"type": "plain_text", "text": "x" * 24}, "blocks": []}, True),
    ({"type": "modal", "title": {"type": "plain_text", "text": "x" * 25}, "blocks": []}, False),
    ({"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": [],
      "private_metadata": "x" * 3001}, False),
])
def test_views_over_slacks_limits_are_refused(view: dict[str, Any], fits: bool,
                                              client: WebClient) -> None:
    if fits:
        client.views_publish(user_id=USER, view=view)
        return
    with pytest.raises(SlackApiError) as refused:
        client.views_publish(user_id=USER, view=view)
    assert refused.value.response["error"] == "invalid_arguments"
    assert refused.value.response["response_metadata"]["messages"]
