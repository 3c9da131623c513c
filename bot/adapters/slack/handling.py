"""The work behind each acknowledged Slack request: every payload the bot acts on, slash
command, button or form, routed to the handler of its verb.

The handlers are :class:`~bot.adapters.slack.handlers.Handlers`: the command's text is parsed
into the verb's input, a button gives its request's ID, a form its checked values. A button and
the command it stands for reach the same handler. Every use case runs in the worker's app, never
in the acknowledgement (:mod:`~bot.adapters.slack.receiving`). The one exception is a payload
that only opens a form (:meth:`Handling.opens_form`): Slack's ``trigger_id`` is good for 3
seconds, so the acknowledging app opens it right after the ack, through the same routes here,
reading and never writing. Each error a person can cause comes back to them as an ephemeral
message (or a DM where Slack has no place for one); every other error is logged and answered
with an apology, never a crash.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.adapters.slack import blocks, clicks, commands, forms, payloads
from bot.adapters.slack.commands import SLASH_COMMAND, Command
from bot.adapters.slack.forms import AccessWanted
from bot.adapters.slack.handlers import Handlers, Reply, reply
from bot.adapters.slack.home import Home
from bot.domain.durations import parse_duration
from bot.domain.eligibility import NotEligible
from bot.domain.errors import DatabaseUnavailable, DomainError
from bot.domain.model import AccessRequest
from bot.services.context import Context, expecting

log = logging.getLogger(__name__)

TextRoute = Callable[[str, Command, str | None], Reply | None]
"""(user ID, parsed command, trigger ID) → the answer."""
ButtonRoute = Callable[[str, int, dict[str, Any]], Reply | None]
"""(user ID, the button's request ID, the payload) → the answer."""
FormRoute = Callable[[str, dict[str, Any]], Reply | None]
"""(user ID, the submitted view) → the answer."""


def acknowledge(ack: Ack) -> None:
    ack()


class Handling:
    def __init__(self, ctx: Context, client: WebClient | None = None) -> None:
        self.handlers = handlers = Handlers(ctx, client)
        self.home = Home(ctx)
        self.by_verb: dict[str, TextRoute] = {
            "help": lambda user, c, trigger: handlers.help(),
            "clusters": lambda user, c, trigger: handlers.clusters(user),
            "whoami": lambda user, c, trigger: handlers.whoami(user),
            "list": lambda user, c, trigger: handlers.listing(user, c.text),
            "request": lambda user, c, trigger: handlers.request(user, _wanted(c), trigger),
            "approve": lambda user, c, trigger: handlers.approve(user, _id(c), c.text,
                                                                 c.duration),
            "deny": lambda user, c, trigger: handlers.deny(user, _id(c), c.text),
            "cancel": lambda user, c, trigger: handlers.cancel(user, _id(c)),
            "revoke": lambda user, c, trigger: handlers.revoke(user, _id(c), c.text),
            "extend": lambda user, c, trigger: handlers.extend(
                user, _id(c), _duration(c), c.text),
            "link": lambda user, c, trigger: handlers.link(user, c.text),
        }
        self.by_button: dict[str, ButtonRoute] = {
            blocks.APPROVE: lambda user, request_id, body: handlers.approve(user, request_id),
            blocks.CANCEL: lambda user, request_id, body: handlers.cancel(user, request_id),
            blocks.REVOKE: lambda user, request_id, body: (
                handlers.review_revoke if payloads.in_review(body) else handlers.revoke)(
                user, request_id),
            blocks.DENY: lambda user, request_id, body: handlers.deny_form(
                user, request_id, body.get("trigger_id")),
            blocks.EXTEND: lambda user, request_id, body: handlers.extend_form(
                user, request_id, body.get("trigger_id")),
            blocks.APPROVE_FOR: lambda user, request_id, body: handlers.approve(
                user, request_id, duration=_chosen_duration(body)),
            blocks.REQUEST_AGAIN: lambda user, request_id, body: handlers.request_again(
                user, request_id, body.get("trigger_id")),
            blocks.KEEP: lambda user, request_id, body: handlers.keep(user, request_id),
        }
        self.by_form: dict[str, FormRoute] = {
            blocks.REQUEST_MODAL: lambda user, view: handlers.request(
                user, forms.access_wanted(view)),
            blocks.DENY_MODAL: self._deny_submitted,
            blocks.EXTEND_MODAL: self._extend_submitted,
        }

    def register(self, app: App) -> None:
        """The worker's app: the work each acknowledged request asks for."""
        app.command(SLASH_COMMAND)(self.on_command)
        for action in self.by_button:
            app.action(action)(self.on_button)
        app.action(blocks.CONFIRM_LINK)(self.on_confirm_link)
        for done_on_receipt in payloads.MODAL_ONLY_ACTIONS:
            app.action(done_on_receipt)(acknowledge)
        for callback in self.by_form:
            app.view(callback)(self.on_form)
        app.event("app_home_opened")(self.on_home_opened)

    # --- what Slack sent --------------------------------------------------------------------

    def opens_form(self, body: dict[str, Any]) -> bool:
        """Whether ``body`` (checked by :func:`payloads.check`) only opens a form: a Deny or
        Extend click, or a ``request`` that lacks what the requester must say. Such a payload
        writes nothing, whatever the person may do: the form's submission is another payload."""
        if body.get("type") == "block_actions":
            return body["actions"][0].get("action_id") in payloads.FORM_ACTIONS
        if body.get("command") != SLASH_COMMAND:
            return False
        try:
            parsed = commands.parse(str(body.get("text", "")))
            return parsed.verb == "request" and self.handlers.opens_form(
                str(body.get("user_id", "")), _wanted(parsed))
        except DomainError:  # the worker answers it, like any other command
            return False
        except Exception:  # the worker answers it, with an apology
            log.exception("could not tell whether a command opens a form")
            return False

    def on_command(self, ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        ack()
        self.answer_command(command, respond)

    def answer_command(self, command: dict[str, Any], respond: Respond) -> None:
        """Do what the slash command says and answer it, ephemerally."""
        user_id = command["user_id"]

        def act() -> Reply | None:
            parsed = commands.parse(command.get("text", ""))
            return self.by_verb[parsed.verb](user_id, parsed, command.get("trigger_id"))

        answer = self.run(user_id, act)
        if answer is not None:
            respond(text=answer.text, blocks=answer.blocks, response_type="ephemeral")

    def on_button(self, ack: Ack, body: dict[str, Any], respond: Respond,
                  client: WebClient) -> None:
        ack()
        self.answer_button(body, respond, client)

    def answer_button(self, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        """Do what the button says and answer the person who clicked it; a button on the Home
        tab publishes the tab again."""
        user_id = _user_id(body)
        action = body["actions"][0]
        route = self.by_button[action["action_id"]]
        self.tell(client, body, respond, self.run(
            user_id, lambda: self._clicked(body, route)))
        if (body.get("view") or {}).get("type") == "home":
            self.home.publish(client, user_id)

    def on_confirm_link(self, ack: Ack, body: dict[str, Any], respond: Respond,
                        client: WebClient) -> None:
        ack()
        admin_id = _user_id(body)
        self.tell(client, body, respond, self.run(
            admin_id, lambda: self.handlers.confirm_link(
                admin_id, clicks.linked_user(body["actions"][0]))))

    def on_form(self, ack: Ack, body: dict[str, Any], view: dict[str, Any],
                client: WebClient) -> None:
        """A submission the acknowledgement checked (:meth:`forms.Forms.errors`)."""
        ack()
        user_id = _user_id(body)
        route = self.by_form[view["callback_id"]]
        self.tell(client, body, None, self.run(user_id, lambda: route(user_id, view)))

    def _clicked(self, body: dict[str, Any], route: ButtonRoute) -> Reply | None:
        """``route`` for the request a button or menu names, refused unless it is one the
        bot's message could have offered there (:mod:`~bot.adapters.slack.clicks`), checked
        as the use case reads it."""
        action = body["actions"][0]
        request_id = clicks.request_id(action)
        config = self.handlers.ctx.config

        def check(request: AccessRequest | None) -> None:
            if request is None:
                raise clicks.BrokenButton(str(action["action_id"]))
            clicks.check_request(body, request, config)

        with expecting(request_id, check):
            return route(_user_id(body), request_id, body)

    def on_home_opened(self, event: dict[str, Any], client: WebClient) -> None:
        self.home.on_opened(event, client)

    def _deny_submitted(self, user_id: str, view: dict[str, Any]) -> None:
        """The form closing and the approval message changing are the denier's answer; only
        a refusal (someone decided first) is told."""
        self.handlers.deny(user_id, payloads.view_request_id(view),
                           forms.values(view).get("reason", ""))

    def _extend_submitted(self, user_id: str, view: dict[str, Any]) -> Reply:
        chosen = forms.values(view)
        return self.handlers.extend(user_id, payloads.view_request_id(view),
                                    parse_duration(chosen["duration"]), chosen.get("reason", ""))

    # --- answering ----------------------------------------------------------------------

    @staticmethod
    def run(user_id: str, action: Callable[[], Reply | None]) -> Reply | None:
        """``action``'s answer; a refusal or a mistake of the person's, told in their words;
        anything else logged with a reference and answered with an apology."""
        try:
            return action()
        except NotEligible as error:
            return reply(blocks.not_eligible(error.message, error.requesters))
        except DomainError as error:
            # The message quotes what the person typed: plain text, never markup.
            return reply(blocks.escape(error.message))
        except DatabaseUnavailable as error:
            log.error("could not answer %s: the database is unreachable (%s)", user_id, error)
            return reply(DatabaseUnavailable.MESSAGE)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("handler failed for %s (reference %s)", user_id, reference)
            return reply(f":warning: Something went wrong on the bot's side (reference "
                         f"`{reference}`). Nothing was changed; try again or ask the "
                         "platform team.")

    @staticmethod
    def tell(client: WebClient, body: dict[str, Any], respond: Respond | None,
             answer: Reply | None) -> None:
        """Answer the person who acted: ephemeral where Slack allows, else in a DM."""
        if answer is None:
            return
        user_id = _user_id(body)
        if respond is not None and body.get("response_url"):
            respond(text=answer.text, blocks=answer.blocks, response_type="ephemeral",
                    replace_original=False)
            return
        channel = body["channel"].get("id") if isinstance(body.get("channel"), dict) else None
        if channel:
            client.chat_postEphemeral(channel=channel, user=user_id, text=answer.text,
                                      blocks=answer.blocks)
            return
        client.chat_postMessage(channel=user_id, text=answer.text, blocks=answer.blocks)


def _user_id(body: dict[str, Any]) -> str:
    user = body.get("user") or {}
    return str(user.get("id") or body.get("user_id"))


def _chosen_duration(body: dict[str, Any]) -> timedelta:
    """The duration an "Approve for…" option names (``ID:DURATION``), one of those offered
    (:func:`clicks.check_request`)."""
    value = str(body["actions"][0]["selected_option"]["value"])
    return parse_duration(value.partition(":")[2])


def _id(command: Command) -> int:
    assert command.request_id is not None  # commands.parse requires it for these verbs
    return command.request_id


def _duration(command: Command) -> timedelta:
    assert command.duration is not None  # commands.parse requires it for extend
    return command.duration


def _wanted(command: Command) -> AccessWanted:
    return AccessWanted(cluster=command.cluster, role=command.role, duration=command.duration,
                        reason=command.text, namespace=command.namespace,
                        break_glass=command.break_glass, grantee_id=command.grantee_id,
                        at=command.at)
