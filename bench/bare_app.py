"""The baseline: a slack-bolt app that only acknowledges, served like the bot (waitress).

``python -m bench.bare_app PORT SLACK_API_URL [before-response]``: Bolt's default mode, or
``process_before_response`` as the bot runs it (the listener answers before it returns, instead
of Bolt waiting for the answer in steps of 10 ms).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from slack_bolt import App
from slack_sdk import WebClient
from waitress import serve

from bot.adapters.web import WebApp
from bot.app import slack_http
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET


def bare_app(api_url: str, before_response: bool = False) -> App:
    app = App(signing_secret=SIGNING_SECRET, token_verification_enabled=False,
              client=WebClient(token=BOT_TOKEN, base_url=api_url),
              process_before_response=before_response)

    @app.command("/k8s-access")
    def command(ack: Callable[[], None]) -> None:
        ack()

    @app.action("approve")
    def click(ack: Callable[[], None]) -> None:
        ack()

    return app


if __name__ == "__main__":
    port, api_url = int(sys.argv[1]), sys.argv[2]
    before_response = sys.argv[3:] == ["before-response"]
    serve(WebApp(slack_http(bare_app(api_url, before_response)), lambda: {}), host="127.0.0.1",
          port=port, threads=8, _quiet=True)
