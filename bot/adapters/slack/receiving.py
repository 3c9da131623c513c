"""Receiving: the Bolt app that faces Slack keeps each request and acknowledges it, and opens
forms.

Slack allows 3 seconds for an answer, and a use case may wait on GitLab or a cluster for longer,
so each request is handled twice, by two Bolt apps. This one, in the process that faces Slack,
refuses a malformed payload with a 400 (:mod:`~bot.adapters.slack.payloads`), answers a form
whose fields are wrong with ``response_action: errors`` (Slack shows them on the fields, and
only an answer to the submission itself can), keeps every other request in the inbox (which
also refuses replays) and acknowledges. It runs no use case that writes: the worker does the
work (:mod:`~bot.adapters.slack.handling`).

A request that only opens a form (a Deny or Extend click, a ``request`` that lacks what the
requester must say: :meth:`Handling.opens_form`) is not kept for the worker: ``views.open``
accepts its ``trigger_id`` for about 3 seconds after the click, and the worker may be busy
for longer. It is acknowledged, and the form opens right after in this process, on a thread of
the receiver's (what Bolt does after ``ack()`` in its default mode), through the worker's own
routes: who may deny or extend is checked by reading the request and the person's groups,
nothing is written. Over HTTP its signature is still kept, done, so that a replay is refused
like any other's. Bolt's lazy listeners would do the same, but they deep-copy the request with
its context, Web API client included, and a client holding a lock (the metrics') cannot be.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, App, BoltContext, BoltResponse, Respond
from slack_sdk import WebClient

from bot.adapters.slack import blocks, payloads
from bot.adapters.slack.commands import SLASH_COMMAND
from bot.adapters.slack.forms import Forms
from bot.adapters.slack.handlers import reply
from bot.adapters.slack.handling import Handling, acknowledge
from bot.adapters.slack.inbox import SlackInbox
from bot.domain.errors import DatabaseUnavailable
from bot.services.context import Context

log = logging.getLogger(__name__)
OPENS_FORM = "k8s_access_opens_form"
"""Set in a request's Bolt context when it only opens a form."""
FORM_THREADS = 16
"""Forms opened at the same time (a burst of clicks); more wait for a thread."""


class Receiver:
    def __init__(self, ctx: Context, inbox: SlackInbox | None = None,
                 client: WebClient | None = None) -> None:
        self.forms = Forms(ctx)
        self.handling = Handling(ctx, client)
        self.inbox = inbox
        self._opening = ThreadPoolExecutor(FORM_THREADS, thread_name_prefix="slack-forms")

    def register(self, app: App) -> None:
        """Keep, check, acknowledge: every payload the worker's app handles is acknowledged
        here; a form opens here, after the acknowledgement."""
        app.middleware(self.receive)
        app.command(SLASH_COMMAND, matchers=[opens_form])(self.on_form_command)
        app.command(SLASH_COMMAND)(acknowledge)
        for action in payloads.FORM_ACTIONS:
            app.action(action)(self.on_form_button)
        for action in (*(payloads.REQUEST_ACTIONS - payloads.FORM_ACTIONS),
                       *payloads.CHOICE_ACTIONS, blocks.CONFIRM_LINK, "namespace"):
            app.action(action)(acknowledge)
        app.action(blocks.PICK_CLUSTER)(self.on_pick)
        app.action(blocks.PICK_ROLE)(self.on_pick)
        for callback in (blocks.REQUEST_MODAL, blocks.DENY_MODAL, blocks.EXTEND_MODAL):
            app.view(callback)(acknowledge)
        app.event("app_home_opened")(acknowledge)

    def receive(self, req: Any, resp: Any, next: Callable[[], Any]) -> Any:
        """Keep the request for the worker. A signed request is kept once: the same signature
        again is a replay. A form with wrong fields is answered with them and not kept; a
        request that only opens a form keeps only its signature. A database that cannot be
        reached is answered with :meth:`unavailable`."""
        try:
            payloads.check(req.body)
        except payloads.MalformedPayload as error:
            log.warning("refused a malformed Slack request: %s", error)
            return BoltResponse(status=400, body="malformed payload")
        try:
            answer = self._keep(req)
        except DatabaseUnavailable as error:
            log.error("could not keep a Slack request: the database is unreachable (%s); "
                      "told the person to try again", error)
            return self.unavailable(req)
        return next() if answer is None else answer

    def _keep(self, req: Any) -> BoltResponse | None:
        """:meth:`receive` past the payload's shape: the answer when it is not passed on."""
        errors = self.forms.errors(req.body)
        if errors:
            return BoltResponse(status=200, body={"response_action": "errors", "errors": errors})
        form_only = self.handling.opens_form(req.body)
        if form_only:
            req.context[OPENS_FORM] = True
        if self.inbox is None:
            return None
        signature = req.headers.get("x-slack-signature", [None])[0]
        signed = signature if signature and req.mode == "http" else None
        if form_only:  # nothing for the worker; in Socket Mode, no signature to replay either
            fresh = signed is None or self.inbox.remember(signed)
        else:
            fresh = self.inbox.receive(signed or f"socket:{uuid.uuid4().hex}",
                                       json.dumps(req.body))
        if not fresh:
            log.warning("rejected a replayed Slack request")
            return BoltResponse(status=401, body="")
        return None

    def unavailable(self, req: Any) -> BoltResponse:
        """The answer when the request cannot be kept (:class:`DatabaseUnavailable`): HTTP 200
        and :data:`DatabaseUnavailable.MESSAGE` where the person sees it. A command's answer
        shows it; a form keeps what was typed and shows it on its first field; a click is
        acknowledged and told after, ephemerally; an options request gets no options."""
        body: dict[str, Any] = req.body
        text = DatabaseUnavailable.MESSAGE
        if body.get("command"):
            return BoltResponse(status=200, body={"response_type": "ephemeral", "text": text})
        kind = body.get("type")
        if kind == "block_suggestion":
            return BoltResponse(status=200, body={"options": []})
        if kind == "view_submission":
            fields = [block["block_id"] for block in body["view"].get("blocks") or []
                      if isinstance(block, dict) and block.get("type") == "input"
                      and block.get("block_id")]
            if fields:
                return BoltResponse(status=200, body={"response_action": "errors",
                                                      "errors": {fields[0]: text}})
        if body.get("user") or body.get("user_id"):
            self._later(self.handling.tell, req.context.client, body, req.context.respond,
                        reply(text))
        return BoltResponse(status=200, body="")

    def on_form_command(self, ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        """``request`` without what the form asks: acknowledged, then the form opens."""
        ack()
        self._later(self.handling.answer_command, command, respond)

    def on_form_button(self, ack: Ack, body: dict[str, Any], respond: Respond,
                       client: WebClient) -> None:
        """Deny or Extend: acknowledged, then the form opens for someone who may use it."""
        ack()
        self._later(self.handling.answer_button, body, respond, client)

    def _later(self, work: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                work(*args)
            except Exception:  # the person's own mistakes were answered inside
                log.exception("could not open a form or answer")

        self._opening.submit(run)

    def on_pick(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        """The request form's cluster or role changed: its choices follow, right away."""
        ack()
        self.forms.refresh_request_form(body, client)


def opens_form(context: BoltContext) -> bool:
    """Bolt matcher: the request only opens a form (see :meth:`Receiver.receive`)."""
    return bool(context.get(OPENS_FORM))
