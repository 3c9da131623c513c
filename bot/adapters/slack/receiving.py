"""Receiving: the Bolt app that faces Slack keeps each request and acknowledges it.

Slack allows 3 seconds for an answer, and a use case may wait on GitLab or a cluster for longer,
so each request is handled twice, by two Bolt apps. This one, in the process that faces Slack,
refuses a malformed payload with a 400 (:mod:`~bot.adapters.slack.payloads`), answers a form
whose fields are wrong with ``response_action: errors`` (Slack shows them on the fields, and
only an answer to the submission itself can), keeps every other request in the inbox (which
also refuses replays) and acknowledges. It runs no use case. The worker then does the work
(:mod:`~bot.adapters.slack.handling`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltResponse
from slack_sdk import WebClient

from bot.adapters.slack import blocks, payloads
from bot.adapters.slack.commands import SLASH_COMMAND
from bot.adapters.slack.forms import Forms
from bot.adapters.slack.inbox import SlackInbox
from bot.services.context import Context

log = logging.getLogger(__name__)


class Receiver:
    def __init__(self, ctx: Context, inbox: SlackInbox | None = None) -> None:
        self.forms = Forms(ctx)
        self.inbox = inbox

    def register(self, app: App) -> None:
        """Keep, check, acknowledge: every payload the worker's app handles is acknowledged
        here."""
        app.middleware(self.receive)
        app.command(SLASH_COMMAND)(acknowledge)
        for action in (*payloads.REQUEST_ACTIONS, *payloads.CHOICE_ACTIONS, blocks.CONFIRM_LINK,
                       "namespace"):
            app.action(action)(acknowledge)
        app.action(blocks.PICK_CLUSTER)(self.on_pick)
        app.action(blocks.PICK_ROLE)(self.on_pick)
        for callback in (blocks.REQUEST_MODAL, blocks.DENY_MODAL, blocks.EXTEND_MODAL):
            app.view(callback)(acknowledge)
        app.event("app_home_opened")(acknowledge)

    def receive(self, req: Any, resp: Any, next: Callable[[], Any]) -> Any:
        """Keep the request for the worker. A signed request is kept once: the same signature
        again is a replay. A form with wrong fields is answered with them and not kept."""
        try:
            payloads.check(req.body)
        except payloads.MalformedPayload as error:
            log.warning("refused a malformed Slack request: %s", error)
            return BoltResponse(status=400, body="malformed payload")
        errors = self.forms.errors(req.body)
        if errors:
            return BoltResponse(status=200, body={"response_action": "errors", "errors": errors})
        if self.inbox is None:
            return next()
        signature = req.headers.get("x-slack-signature", [None])[0]
        key = signature if signature and req.mode == "http" else f"socket:{uuid.uuid4().hex}"
        if not self.inbox.receive(key, json.dumps(req.body)):
            log.warning("rejected a replayed Slack request")
            return BoltResponse(status=401, body="")
        return next()

    def on_pick(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        """The request form's cluster or role changed: its choices follow, right away."""
        ack()
        self.forms.refresh_request_form(body, client)


def acknowledge(ack: Ack) -> None:
    ack()
