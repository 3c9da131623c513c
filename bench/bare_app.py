"""The baseline: a slack-bolt app that only acknowledges, served like the bot (waitress).

``python -m bench.bare_app PORT SLACK_API_URL``
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from slack_bolt import App
from slack_sdk import WebClient
from waitress import serve

from bot.adapters.web import WebApp
from bot.fakes.slack import BOT_TOKEN, SIGNING_SECRET


def bare_app(api_url: str) -> App:
    app = App(signing_secret=SIGNING_SECRET, token_verification_enabled=False,
              client=WebClient(token=BOT_TOKEN, base_url=api_url))

    @app.command("/k8s-access")
    def command(ack: Callable[[], None]) -> None:
        ack()

    @app.action("approve")
    def click(ack: Callable[[], None]) -> None:
        ack()

    return app


if __name__ == "__main__":
    port, api_url = int(sys.argv[1]), sys.argv[2]
    serve(WebApp(bare_app(api_url), lambda: {}), host="127.0.0.1", port=port, threads=8,
          _quiet=True)
