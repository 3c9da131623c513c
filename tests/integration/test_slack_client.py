"""The bot's Slack Web API client keeps its connections alive, and behaves as the SDK's own
otherwise: 429s waited out, errors raised, a Slack that is gone unreachable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack.client import make_client
from bot.config import Settings
from bot.fakes.slack import BOT_TOKEN, FakeSlack

CHANNEL, USER = "C0MEMBER1", "U0ALICE01"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(users={USER: {"email": "alice@example.com"}}, channels={CHANNEL}).start()
    yield fake
    fake.stop()


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    return make_client(Settings(slack_bot_token=BOT_TOKEN, slack_api_url=slack.api_url))


def test_calls_of_a_thread_share_one_connection(slack: FakeSlack, client: WebClient) -> None:
    for n in range(5):
        client.chat_postMessage(channel=CHANNEL, text=f"message {n}")
    dm = client.conversations_open(users=USER)["channel"]["id"]
    client.files_upload_v2(channel=dm, content=b"apiVersion: v1\n", filename="a.kubeconfig")
    assert len(slack.channel_messages(CHANNEL)) == 5
    assert [f["filename"] for f in slack.uploaded_to(dm)] == ["a.kubeconfig"]
    assert slack.connections == 1
    # the SDK's own client, for comparison: a connection per call
    sdk = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    sdk.chat_postMessage(channel=CHANNEL, text="a")
    sdk.chat_postMessage(channel=CHANNEL, text="b")
    assert slack.connections == 3


def test_threads_do_not_share_a_connection(slack: FakeSlack, client: WebClient) -> None:
    def post() -> None:
        for _ in range(10):
            client.chat_postMessage(channel=CHANNEL, text="hi")

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(slack.channel_messages(CHANNEL)) == 40
    assert slack.connections == 4


def test_a_connection_slack_closed_while_idle_is_opened_again(slack: FakeSlack,
                                                             client: WebClient) -> None:
    client.retry_handlers = []  # not the SDK's retry of connection errors: the request itself
    client.chat_postMessage(channel=CHANNEL, text="first")
    slack.hang_up()
    time.sleep(0.05)
    client.chat_postMessage(channel=CHANNEL, text="second")
    assert [m["text"] for m in slack.channel_messages(CHANNEL)] == ["first", "second"]
    assert slack.connections == 2
    assert slack.errors() == []


def test_a_429_is_waited_out_on_the_kept_connection(slack: FakeSlack, client: WebClient) -> None:
    slack.rate_limited["chat.postMessage"] = 1
    started = time.monotonic()
    client.chat_postMessage(channel=CHANNEL, text="after the wait")
    assert time.monotonic() - started >= slack.retry_after
    assert [m["text"] for m in slack.channel_messages(CHANNEL)] == ["after the wait"]
    assert slack.limited == 1


def test_errors_are_raised_as_the_sdk_raises_them(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C0NOWHERE", text="hi")
    assert refused.value.response["error"] == "channel_not_found"


def test_a_stopped_slack_answers_nobody_on_a_kept_connection(slack: FakeSlack) -> None:
    client = make_client(Settings(slack_bot_token=BOT_TOKEN, slack_api_url=slack.api_url))
    client.retry_handlers = []
    client.chat_postMessage(channel=CHANNEL, text="before")
    slack.stop()
    with pytest.raises(OSError):
        client.chat_postMessage(channel=CHANNEL, text="after")
