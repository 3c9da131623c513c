"""The real HTTP endpoint with Slack's signature checks, bad input of every kind, and the
Web API misbehaving like Slack does (429 with Retry-After, channel_not_found)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from waitress.server import create_server

from bot.adapters.web import WebApp
from bot.app import SlackRuntime, slack_http
from bot.domain.model import State
from bot.fakes.slack import SIGNING_SECRET, FakeSlack, signed_headers
from bot.services import grants
from tests.conftest import ALICE, BOB, CAROL
from tests.fakes.ports import InMemoryGranter
from tests.scenario.conftest import APPROVALS_CHANNEL, Driver, command_body, wait_for


@pytest.fixture
def endpoint(runtime: SlackRuntime) -> Iterator[str]:
    server = create_server(WebApp(slack_http(runtime.app), lambda: {}), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(5)


def post(url: str, body: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def count_requests(runtime: SlackRuntime) -> int:
    with runtime.ctx.transaction() as uow:
        return len(uow.requests.find())


def test_happy_path_over_http(endpoint: str, slack: FakeSlack, runtime: SlackRuntime) -> None:
    url = slack.response_url()
    body = command_body(slack, ALICE, "request staging edit 1h deploy", url)
    status, _ = post(endpoint + "/slack/events", body, signed_headers(body))
    assert status == 200
    answer = wait_for(lambda: slack.responses_to(url))[0]
    assert answer["text"].startswith("Request #1 filed")
    assert grants.get(runtime.ctx, 1).state is State.PENDING
    health = urllib.request.urlopen(endpoint + "/healthz", timeout=5)
    assert health.status == 200


@pytest.mark.parametrize("forgery", ["wrong-secret", "unsigned", "stale", "tampered", "replayed"])
def test_forged_requests_get_401_and_change_nothing(endpoint: str, slack: FakeSlack,
                                                    runtime: SlackRuntime, forgery: str) -> None:
    body = command_body(slack, ALICE, "request staging edit 1h deploy", slack.response_url())
    headers = signed_headers(body)
    if forgery == "wrong-secret":
        headers = signed_headers(body, secret="not-the-secret")
    elif forgery == "unsigned":
        headers = {"content-type": "application/x-www-form-urlencoded"}
    elif forgery == "stale":
        headers = signed_headers(body, timestamp=int(time.time()) - 6 * 60)
    elif forgery == "tampered":
        body = body.replace("staging", "prod")
    elif forgery == "replayed":
        assert post(endpoint + "/slack/events", body, headers)[0] == 200
        wait_for(lambda: count_requests(runtime) == 1)
    status, _ = post(endpoint + "/slack/events", body, headers)
    assert status == 401
    time.sleep(0.2)
    assert count_requests(runtime) == (1 if forgery == "replayed" else 0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("frobnicate", "`frobnicate` is not a command. Try one of: request, list"),
        ("request qa edit 1h x", "There is no cluster 'qa'. Clusters: staging, prod."),
        ("request staging owner 1h x", "Cluster staging has no role 'owner'. Roles: view, edit"),
        ("request staging edit 4x deploy", "'4x' is not a duration: write it like 90m, 4h"),
        ("request staging edit 2d deploy", "longer than staging/edit allows: ask for 1d or less"),
        ("request staging edit 1h --force deploy", "Unknown option `--force`"),
        ("approve", "Which request?"),
        ("approve abc", "'abc' is not a request ID"),
        ("approve 999", "There is no request #999."),
        ("deny 999 no", "There is no request #999."),
        ("extend 1", "How much longer?"),
        ("list everything", "'everything' is not a list"),
        ("link github alice", "Write `/k8s-access link gitlab USERNAME`"),
    ],
)
def test_bad_input_gets_a_clear_answer(driver: Driver, runtime: SlackRuntime, text: str,
                                       says: str) -> None:
    answer = driver.ask(ALICE, text)
    assert says in answer["text"]
    assert answer["response_type"] == "ephemeral"
    assert count_requests(runtime) == 0


def test_missing_reason_opens_the_form_and_deny_needs_one(driver: Driver, slack: FakeSlack,
                                                           runtime: SlackRuntime) -> None:
    driver.command(ALICE, "request staging edit 1h")
    modal = wait_for(lambda: slack.called("views.open"))[0]["view"]
    assert modal["blocks"][-1]["block_id"] == "reason" and not modal["blocks"][-1]["optional"]
    assert count_requests(runtime) == 0
    assert driver.ask(ALICE, "request staging edit 1h deploy")["text"].startswith("Request #1")
    assert "Say why you deny it" in driver.ask(BOB, "deny 1")["text"]
    again = driver.ask(ALICE, "request staging edit 1h x")["text"]
    assert "already asked for staging/edit" in again
    assert grants.get(runtime.ctx, 1).state is State.PENDING


def test_text_commands(driver: Driver, runtime: SlackRuntime, granter: InMemoryGranter) -> None:
    driver.ask(ALICE, "request prod view 1h debug")
    assert "Waiting for 1 more approval" in driver.ask(BOB, "approve 1 looks fine")["text"]
    assert "Active until" in driver.ask(CAROL, "approve #1")["text"]
    assert "Only the grantee" in driver.ask("U0STRANGER", "revoke 1")["text"]
    assert driver.ask(ALICE, "revoke 1 done")["text"] == "Request #1 is revoked."
    assert granter.calls["revoked"] == 1
    assert driver.ask(ALICE, "request staging edit 1h x")["text"].startswith("Request #2 filed")
    assert driver.ask(ALICE, "cancel 2")["text"] == "Request #2 is cancelled."
    assert "*staging* (rbac)" in driver.ask(ALICE, "clusters")["text"]
    who = driver.ask(ALICE, "whoami")["text"]
    assert "*Email*: u0alice01@example.com" in who and "*staging*: `u0alice01@example.com`" in who
    assert "/k8s-access request [CLUSTER [ROLE [DURATION]]]" in driver.ask(ALICE, "help")["text"]
    assert "/k8s-access request" in driver.ask(ALICE, "")["text"]


def test_rate_limited_messages_are_retried(driver: Driver, slack: FakeSlack) -> None:
    slack.rate_limited["chat.postMessage"] = 2
    driver.ask(ALICE, "request staging edit 1h deploy")
    posted = wait_for(lambda: slack.channel_messages(APPROVALS_CHANNEL), timeout=10)
    assert len(posted) == 1
    assert len(slack.called("chat.postMessage")) == 3  # two 429s, then delivered


def test_unknown_channel_does_not_lose_the_request(driver: Driver, slack: FakeSlack,
                                                   runtime: SlackRuntime) -> None:
    slack.channels.discard(APPROVALS_CHANNEL)
    answer = driver.ask(ALICE, "request staging edit 1h deploy")
    assert answer["text"].startswith("Request #1 filed")
    assert grants.get(runtime.ctx, 1).state is State.PENDING
    assert slack.called("chat.postMessage")[0]["channel"] == APPROVALS_CHANNEL


def _payload(**fields: object) -> str:
    base: dict[str, object] = {"team": {"id": "T0TEAM"}, "api_app_id": "A0APP"}
    return urlencode({"payload": json.dumps({**base, **fields})})


def _button(action_id: str = "approve", value: object = "1") -> dict[str, object]:
    return {"type": "button", "action_id": action_id, "block_id": "b", "value": value}


def _view(callback_id: str, metadata: object, values: object = None) -> dict[str, object]:
    return {"id": "V1", "type": "modal", "callback_id": callback_id, "private_metadata": metadata,
            "state": {"values": {} if values is None else values}}


MALFORMED: dict[str, str | bytes] = {
    "payload not JSON": urlencode({"payload": "{not json"}),
    "payload a list": urlencode({"payload": "[1, 2]"}),
    "payload a string": urlencode({"payload": '"block_actions"'}),
    "body not UTF-8": b"payload=\xff\xfe",
    "empty actions": _payload(type="block_actions", user={"id": ALICE}, actions=[]),
    "actions not a list": _payload(type="block_actions", user={"id": ALICE},
                                   actions={"action_id": "approve"}),
    "action without action_id": _payload(type="block_actions", user={"id": ALICE},
                                         actions=[{"value": "1"}]),
    "button value a number": _payload(type="block_actions", user={"id": ALICE},
                                      actions=[_button(value=1)]),
    "missing user": _payload(type="block_actions", actions=[_button()]),
    "user a string": _payload(type="block_actions", user=ALICE, actions=[_button()]),
    "deny without trigger_id": _payload(type="block_actions", user={"id": BOB},
                                        actions=[_button("deny")]),
    "modal-only action from a message": _payload(
        type="block_actions", user={"id": ALICE}, trigger_id="t",
        channel={"id": APPROVALS_CHANNEL}, actions=[_button("pick_cluster", "staging")]),
    "deny form metadata not an ID": _payload(
        type="view_submission", user={"id": BOB}, view=_view("deny_modal", "#1; drop")),
    "extend form metadata out of range": _payload(
        type="view_submission", user={"id": ALICE},
        view=_view("extend_modal", "99999999999999999999")),
    "request form metadata not JSON": _payload(
        type="view_submission", user={"id": ALICE}, view=_view("request_modal", "{oops")),
    "request form metadata a list": _payload(
        type="view_submission", user={"id": ALICE}, view=_view("request_modal", "[1]")),
    "view without state": _payload(
        type="view_submission", user={"id": ALICE},
        view={"id": "V1", "type": "modal", "callback_id": "deny_modal",
              "private_metadata": "1"}),
    "view without type": _payload(
        type="view_submission", user={"id": ALICE},
        view={"id": "V1", "callback_id": "deny_modal", "private_metadata": "1",
              "state": {"values": {}}}),
    "state values of the wrong type": _payload(
        type="view_submission", user={"id": ALICE}, view=_view("deny_modal", "1", ["x"])),
    "selected option a string": _payload(
        type="view_submission", user={"id": ALICE},
        view=_view("request_modal", "{}", {"cluster": {"pick_cluster": {
            "type": "static_select", "selected_option": "staging"}}})),
    "typed value a number": _payload(
        type="view_submission", user={"id": ALICE},
        view=_view("extend_modal", "1", {"duration": {"duration": {
            "type": "plain_text_input", "value": 2}}})),
    "event not an object": json.dumps({"type": "event_callback", "team_id": "T0TEAM",
                                       "event": "app_home_opened"}),
    "home opened without user": json.dumps({"type": "event_callback", "team_id": "T0TEAM",
                                            "event": {"type": "app_home_opened"}}),
    "command without user": urlencode({"command": "/k8s-access", "text": "list",
                                       "team_id": "T0TEAM"}),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_payloads_get_400_and_are_never_queued(
        endpoint: str, runtime: SlackRuntime, slack: FakeSlack, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    body = MALFORMED[case]
    raw = body if isinstance(body, bytes) else body.encode()
    content_type = "application/json" if raw.startswith(b"{") \
        else "application/x-www-form-urlencoded"
    headers = signed_headers(raw.decode("latin-1"), content_type=content_type)
    if isinstance(body, bytes):  # sign the bytes themselves
        stamp = headers["x-slack-request-timestamp"]
        digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + stamp.encode() + b":" + raw,
                          hashlib.sha256).hexdigest()
        headers["x-slack-signature"] = f"v0={digest}"
    status, answer = post_bytes(endpoint + "/slack/events", raw, headers)
    assert status == 400, (status, answer)
    assert "Traceback" not in answer
    assert runtime.inbox.waiting() == 0
    time.sleep(0.2)
    assert slack.called("views.open") == [] and slack.called("chat.postMessage") == []
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    if not isinstance(body, bytes):  # unsigned, the same body is refused as a forgery
        unsigned = post_bytes(endpoint + "/slack/events", raw, {"content-type": content_type})
        assert unsigned[0] == 401


def test_a_malformed_payload_dispatched_directly_is_refused_before_the_inbox(
        driver: Driver, runtime: SlackRuntime) -> None:
    """Socket Mode hands payloads to the app without the HTTP handler: the app checks too."""
    response = driver.dispatch(MALFORMED["deny form metadata not an ID"])  # type: ignore[arg-type]
    assert response.status == 400
    assert runtime.inbox.waiting() == 0


def post_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
