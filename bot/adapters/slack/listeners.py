"""Slack listeners: parse, call one use case, render. No business rule lives here.

Each request is handled twice, by two Bolt apps over the same listeners. The app that faces
Slack (:meth:`Listeners.register`) refuses a malformed payload with a 400
(:mod:`bot.adapters.slack.payloads`), keeps the request in the inbox (which also refuses
replays) and acknowledges: Slack allows 3 seconds. Modal submissions validate their fields
there, so that errors show on the field. The worker's app (:meth:`Listeners.register_work`)
then does the work and answers; every error a person can cause comes back to them as an
ephemeral message, every other error is logged and answered with an apology, never a crash.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import Ack, App, BoltResponse, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack import blocks, commands, payloads
from bot.adapters.slack.inbox import SlackInbox
from bot.domain import lifecycle
from bot.domain.durations import format_duration, parse_duration
from bot.domain.errors import DomainError, InvalidInput
from bot.domain.model import AccessRequest, State
from bot.services import grants, identity, requests
from bot.services.context import Context

log = logging.getLogger(__name__)
SLASH_COMMAND = "/k8s-access"
TRIGGER_ERRORS = frozenset({"expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"})
"""What ``views.open`` answers when the click or command is too old (3 s) or was used already."""


@dataclass(frozen=True)
class Reply:
    text: str
    blocks: list[blocks.Block] = field(default_factory=list)


def _reply(text: str) -> Reply:
    """An answer in mrkdwn the bot wrote; typed parts must already be escaped."""
    return Reply(*blocks.reply(text))


class Listeners:
    def __init__(self, ctx: Context, client: WebClient | None = None,
                 inbox: SlackInbox | None = None) -> None:
        self.ctx = ctx
        self.client = client
        self.inbox = inbox

    def register(self, app: App) -> None:
        """The app that faces Slack: keep, validate, acknowledge."""
        app.middleware(self.receive)
        app.command(SLASH_COMMAND)(self.acknowledge)
        for action in (blocks.APPROVE, blocks.DENY, blocks.REVOKE, blocks.EXTEND, blocks.CANCEL,
                       blocks.CONFIRM_LINK, "namespace"):
            app.action(action)(self.acknowledge)
        app.action(blocks.PICK_CLUSTER)(self.on_pick)
        app.action(blocks.PICK_ROLE)(self.on_pick)
        app.view(blocks.REQUEST_MODAL)(self.check_request_form)
        app.view(blocks.DENY_MODAL)(self.on_deny_submitted)
        app.view(blocks.EXTEND_MODAL)(self.check_extend_form)
        app.event("app_home_opened")(self.acknowledge)

    def register_work(self, app: App) -> None:
        """The worker's app: the work each acknowledged request asks for."""
        app.command(SLASH_COMMAND)(self.on_command)
        app.action(blocks.APPROVE)(self.on_approve)
        app.action(blocks.DENY)(self.on_deny)
        app.action(blocks.REVOKE)(self.on_revoke)
        app.action(blocks.EXTEND)(self.on_extend)
        app.action(blocks.CANCEL)(self.on_cancel)
        app.action(blocks.CONFIRM_LINK)(self.on_confirm_link)
        for done_on_receipt in (blocks.PICK_CLUSTER, blocks.PICK_ROLE, "namespace"):
            app.action(done_on_receipt)(self.acknowledge)
        app.view(blocks.REQUEST_MODAL)(self.on_request_submitted)
        app.view(blocks.DENY_MODAL)(self.acknowledge)
        app.view(blocks.EXTEND_MODAL)(self.on_extend_submitted)
        app.event("app_home_opened")(self.on_home_opened)

    # --- plumbing -----------------------------------------------------------------------

    def receive(self, req: Any, resp: Any, next: Callable[[], Any]) -> Any:
        """Keep the request for the worker. A signed request is kept once: the same signature
        again is a replay."""
        try:
            payloads.check(req.body)
        except payloads.MalformedPayload as error:
            log.warning("refused a malformed Slack request: %s", error)
            return BoltResponse(status=400, body="malformed payload")
        if self.inbox is None:
            return next()
        signature = req.headers.get("x-slack-signature", [None])[0]
        key = signature if signature and req.mode == "http" else f"socket:{uuid.uuid4().hex}"
        if not self.inbox.receive(key, json.dumps(req.body)):
            log.warning("rejected a replayed Slack request")
            return BoltResponse(status=401, body="")
        return next()

    @staticmethod
    def acknowledge(ack: Ack) -> None:
        ack()

    def _run(self, user_id: str, action: Callable[[], Reply | None]) -> Reply | None:
        try:
            return action()
        except DomainError as error:
            # The message quotes what the person typed: plain text, never markup.
            return _reply(blocks.escape(error.message))
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("handler failed for %s (reference %s)", user_id, reference)
            return _reply(f":warning: Something went wrong on the bot's side (reference "
                          f"`{reference}`). Nothing was changed; try again or ask the "
                          "platform team.")

    def _tell(self, client: WebClient, body: dict[str, Any], respond: Respond | None,
              reply: Reply | None) -> None:
        """Answer the person who acted: ephemeral where Slack allows, else in a DM."""
        if reply is None:
            return
        user_id = _user_id(body)
        if respond is not None and body.get("response_url"):
            respond(text=reply.text, blocks=reply.blocks, response_type="ephemeral",
                    replace_original=False)
            return
        channel = body.get("channel", {}).get("id") if isinstance(body.get("channel"), dict) \
            else None
        if channel:
            client.chat_postEphemeral(channel=channel, user=user_id, text=reply.text,
                                      blocks=reply.blocks)
            return
        dm = client.conversations_open(users=user_id)["channel"]["id"]
        client.chat_postMessage(channel=dm, text=reply.text, blocks=reply.blocks)

    def _refresh_home(self, client: WebClient, body: dict[str, Any]) -> None:
        if body.get("view", {}).get("type") == "home":
            self.publish_home(client, _user_id(body))

    # --- the slash command --------------------------------------------------------------

    def on_command(self, ack: Ack, command: dict[str, Any], respond: Respond,
                   client: WebClient) -> None:
        ack()
        user_id = command["user_id"]

        def act() -> Reply | None:
            parsed = commands.parse(command.get("text", ""))
            if parsed.verb == "request" and not self._complete(parsed):
                prefill = {"cluster": parsed.cluster, "role": parsed.role,
                           "namespace": parsed.namespace, "reason": parsed.text,
                           "break_glass": parsed.break_glass,
                           "duration": _spell(parsed)}
                _open_form(client, command.get("trigger_id"),
                           blocks.request_modal(self.ctx.config, prefill),
                           instead=_request_syntax(parsed))
                return None
            return self.execute(parsed, user_id)

        reply = self._run(user_id, act)
        if reply is not None:
            respond(text=reply.text, blocks=reply.blocks, response_type="ephemeral")

    def _complete(self, parsed: commands.Command) -> bool:
        """True when the typed request needs no form; unknown names raise with the choices."""
        if parsed.cluster is None or parsed.role is None:
            if parsed.cluster is not None:
                self.ctx.config.cluster(parsed.cluster)
            return False
        policy = self.ctx.config.policy(parsed.cluster, parsed.role)
        if policy.namespaces and parsed.namespace is None and len(policy.namespaces) > 1:
            return False
        return not (policy.require_reason or parsed.break_glass) or bool(parsed.text.strip())

    def execute(self, parsed: commands.Command, user_id: str) -> Reply:
        """Run a parsed command as ``user_id`` and say what happened."""
        ctx = self.ctx
        verb = parsed.verb
        if verb == "help":
            return _reply(commands.help_text())
        if verb == "clusters":
            return _reply(blocks.clusters_overview(ctx.config))
        if verb == "whoami":
            return _reply(_whoami(identity.whoami(ctx, user_id)))
        if verb == "list":
            found = requests.list_requests(ctx, user_id, parsed.text)
            return Reply(*blocks.listing(found.scope.value, found.requests, ctx.clock()))
        if verb == "request":
            assert parsed.cluster is not None and parsed.role is not None
            filed = requests.file_request(
                ctx, user_id, parsed.cluster, parsed.role, duration=parsed.duration,
                reason=parsed.text, namespace=parsed.namespace, break_glass=parsed.break_glass)
            return _reply(blocks.filed_message(filed, self._missing(filed)))
        if verb == "link":
            link = identity.link_gitlab(ctx, user_id, parsed.text)
            username = blocks.escape(link.username)
            if link.confirmed:
                return _reply(f"Linked to GitLab user `{username}`.")
            asked = self._ask_admins(user_id, link.username)
            return _reply(f"GitLab does not show `{username}` with your Slack email, so an "
                          f"admin must confirm the link; {asked}.")
        assert parsed.request_id is not None
        request_id = parsed.request_id
        if verb == "approve":
            done = requests.approve(ctx, request_id, user_id, parsed.text)
            return _reply(f"You approved request #{request_id}. "
                          f"{blocks.status(done, self._missing(done))}")
        if verb == "deny":
            requests.deny(ctx, request_id, user_id, parsed.text)
            return _reply(f"You denied request #{request_id}.")
        if verb == "cancel":
            requests.cancel(ctx, request_id, user_id)
            return _reply(f"Request #{request_id} is cancelled.")
        if verb == "revoke":
            revoked = grants.revoke(ctx, request_id, user_id, parsed.text or "revoked in Slack")
            return _reply(_revocation(revoked))
        if verb == "extend":
            assert parsed.duration is not None
            extension = requests.extend(ctx, request_id, user_id, parsed.duration, parsed.text)
            line = blocks.status(extension, self._missing(extension))
            if extension.state is State.PENDING:
                line = line.removesuffix(".") + blocks.reach_line(extension.notified)
            return _reply(f"Extension #{extension.id} of grant #{request_id}: {line}")
        raise InvalidInput(commands.help_text())

    def _ask_admins(self, user_id: str, username: str) -> str:
        admins = self.ctx.admins()  # a group Slack cannot list never stops the others
        if self.client is None or not admins:
            return "ask one of the admins"
        text, content = blocks.link_confirmation(user_id, username)
        asked = 0
        for admin in sorted(admins):  # one admin Slack cannot reach never stops the others
            try:
                dm = self.client.conversations_open(users=admin)["channel"]["id"]
                self.client.chat_postMessage(channel=dm, text=text, blocks=content)
                asked += 1
            except SlackApiError as error:
                log.warning("could not ask admin %s to confirm a GitLab link: %s", admin,
                            error.response.get("error"))
        return "the admins have been asked" if asked else "no admin could be told: ask one"

    def on_confirm_link(self, ack: Ack, body: dict[str, Any], respond: Respond,
                        client: WebClient) -> None:
        ack()
        admin_id = _user_id(body)

        def act() -> Reply:
            user_id = body["actions"][0].get("value", "")
            link = identity.confirm_link(self.ctx, admin_id, user_id)
            return _reply(f"{blocks.mention(user_id)} is now linked to GitLab user "
                          f"`{blocks.escape(link.username)}`.")

        self._tell(client, body, respond, self._run(admin_id, act))

    def _missing(self, request: AccessRequest) -> int:
        return lifecycle.approvals_missing(
            request, self.ctx.config.policy(request.cluster, request.role))

    # --- buttons ------------------------------------------------------------------------

    def _button(self, ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient,
                action: Callable[[int, str], Reply | None]) -> None:
        ack()
        user_id = _user_id(body)

        def act() -> Reply | None:
            return action(_button_request_id(body), user_id)

        self._tell(client, body, respond, self._run(user_id, act))
        self._refresh_home(client, body)

    def on_approve(self, ack: Ack, body: dict[str, Any], respond: Respond,
                   client: WebClient) -> None:
        self._button(ack, body, respond, client, lambda request_id, user_id: self.execute(
            commands.Command("approve", request_id=request_id), user_id))

    def on_revoke(self, ack: Ack, body: dict[str, Any], respond: Respond,
                  client: WebClient) -> None:
        self._button(ack, body, respond, client, lambda request_id, user_id: self.execute(
            commands.Command("revoke", request_id=request_id), user_id))

    def on_cancel(self, ack: Ack, body: dict[str, Any], respond: Respond,
                  client: WebClient) -> None:
        self._button(ack, body, respond, client, lambda request_id, user_id: self.execute(
            commands.Command("cancel", request_id=request_id), user_id))

    def _open_modal(self, body: dict[str, Any], client: WebClient,
                    build: Callable[[AccessRequest, str], dict[str, Any]],
                    instead: str) -> Reply | None:
        """Open the form ``build`` makes, once it has checked that the clicker may use it: a
        refusal is the domain's own, told before any of the request's details are shown."""
        request = grants.get(self.ctx, _button_request_id(body))
        view = build(request, _user_id(body))
        _open_form(client, body.get("trigger_id"), view, instead=instead.format(id=request.id))
        return None

    def on_deny(self, ack: Ack, body: dict[str, Any], respond: Respond,
                client: WebClient) -> None:
        def build(request: AccessRequest, user_id: str) -> dict[str, Any]:
            policy = self.ctx.config.policy(request.cluster, request.role)
            lifecycle.check_deny(request, self.ctx.actor(user_id), policy)
            return blocks.deny_modal(request)

        self._button(ack, body, respond, client, lambda *_: self._open_modal(
            body, client, build, "`/k8s-access deny {id} REASON`"))

    def on_extend(self, ack: Ack, body: dict[str, Any], respond: Respond,
                  client: WebClient) -> None:
        def build(request: AccessRequest, user_id: str) -> dict[str, Any]:
            lifecycle.check_extend(request, self.ctx.actor(user_id))
            return blocks.extend_modal(request)

        self._button(ack, body, respond, client, lambda *_: self._open_modal(
            body, client, build, "`/k8s-access extend {id} DURATION [REASON]`, like "
                                 "`extend {id} 2h still debugging`"))

    def on_pick(self, ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        """The cluster or role changed in the request form: rebuild it with the right choices."""
        ack()
        view = body["view"]
        prefill = {**payloads.form_memory(view), **_form_values(view["state"]["values"])}
        if body["actions"][0]["action_id"] == blocks.PICK_CLUSTER:
            prefill.pop("role", None)
            prefill.pop("namespace", None)
        try:
            client.views_update(view_id=view["id"], hash=view.get("hash"),
                                view=blocks.request_modal(self.ctx.config, prefill))
        except SlackApiError as error:  # a newer pick won (hash_conflict), or the form closed
            log.warning("could not update the request form: %s", error.response.get("error"))

    # --- modal submissions --------------------------------------------------------------

    def check_request_form(self, ack: Ack, view: dict[str, Any]) -> None:
        meta = payloads.form_memory(view)
        errors = self._request_form_errors(_form_values(view["state"]["values"]),
                                           bool(meta.get("break_glass")))
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()

    def on_request_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any],
                             client: WebClient) -> None:
        ack()
        user_id = _user_id(body)
        values = _form_values(view["state"]["values"])
        meta = payloads.form_memory(view)
        if self._request_form_errors(values, bool(meta.get("break_glass"))):
            return  # shown on the form when it was submitted

        def act() -> Reply:
            filed = requests.file_request(
                self.ctx, user_id, values["cluster"], values["role"],
                duration=parse_duration(values["duration"]), reason=values.get("reason", ""),
                namespace=values.get("namespace"), break_glass=bool(meta.get("break_glass")),
                user_csr=values.get("csr") or None)
            return _reply(blocks.filed_message(filed, self._missing(filed)))

        self._tell(client, body, None, self._run(user_id, act))

    def _request_form_errors(self, values: dict[str, str], break_glass: bool) -> dict[str, str]:
        config = self.ctx.config
        if values.get("cluster") not in config.clusters:
            return {"cluster": "Choose a cluster."}
        if values.get("role") not in config.clusters[values["cluster"]].roles:
            return {"role": "Choose a role."}
        policy = config.policy(values["cluster"], values["role"])
        try:
            duration = parse_duration(values.get("duration", ""))
        except DomainError as error:
            return {"duration": error.message}
        return lifecycle.field_errors(policy, duration=duration, reason=values.get("reason", ""),
                                      namespace=values.get("namespace"), break_glass=break_glass)

    def on_deny_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = _user_id(body)
        reason = _form_values(view["state"]["values"]).get("reason", "")
        try:
            requests.deny(self.ctx, payloads.view_request_id(view), user_id, reason)
        except DomainError as error:
            ack(response_action="errors", errors={"reason": error.message})
            return
        except Exception:
            log.exception("deny failed")
            ack(response_action="errors", errors={"reason": "Something went wrong; try again."})
            return
        ack()

    def check_extend_form(self, ack: Ack, view: dict[str, Any]) -> None:
        try:
            parse_duration(_form_values(view["state"]["values"]).get("duration", ""))
        except DomainError as error:
            ack(response_action="errors", errors={"duration": error.message})
            return
        ack()

    def on_extend_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any],
                            client: WebClient) -> None:
        ack()
        user_id = _user_id(body)
        values = _form_values(view["state"]["values"])
        grant_id = payloads.view_request_id(view)
        try:
            duration = parse_duration(values.get("duration", ""))
        except DomainError:
            return  # shown on the form when it was submitted
        self._tell(client, body, None, self._run(
            user_id, lambda: self.execute(
                commands.Command("extend", request_id=grant_id, duration=duration,
                                 text=values.get("reason", "")), user_id)))

    # --- App Home -----------------------------------------------------------------------

    def on_home_opened(self, event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") == "home":
            self.publish_home(client, event["user"])

    def publish_home(self, client: WebClient, user_id: str) -> None:
        ctx = self.ctx
        mine = requests.list_requests(ctx, user_id, "mine").requests
        waiting = requests.list_requests(ctx, user_id, "pending").requests
        missing = {r.id: self._missing(r) for r in [*mine, *waiting]
                   if r.id is not None and r.state is State.PENDING}
        try:
            client.views_publish(user_id=user_id,
                                 view=blocks.home_view(mine, waiting, ctx.clock(), missing))
        except SlackApiError as error:  # the Home tab stays as it was; nobody is waiting on it
            log.warning("App Home of %s not published: Slack answered %s", user_id,
                        error.response.get("error") if error.response is not None else error)


# --- helpers ------------------------------------------------------------------------------


def _user_id(body: dict[str, Any]) -> str:
    user = body.get("user") or {}
    return str(user.get("id") or body.get("user_id"))


def _button_request_id(body: dict[str, Any]) -> int:
    action = body["actions"][0]
    try:
        return commands.parse_request_id(str(action.get("value", "")), action["action_id"])
    except DomainError:
        raise InvalidInput("That button is broken; use the command instead.") from None


def _open_form(client: WebClient, trigger_id: str | None, view: dict[str, Any], *,
               instead: str) -> None:
    """Open ``view``; when Slack will not open it (the trigger too old or used, the view
    refused, Slack busy), say what to type instead."""
    try:
        client.views_open(trigger_id=trigger_id or "", view=view)
    except SlackApiError as error:
        code = error.response.get("error") if error.response is not None else None
        if code in TRIGGER_ERRORS:
            log.info("views.open refused the trigger (%s)", code)
            why = "the click was too old or already used"
        else:
            log.warning("views.open refused the form: %s", code)
            why = "Slack would not show it"
        raise InvalidInput(f"The form could not open: Slack answered `{code}` ({why}). Type "
                           f"the command instead: {instead}") from None


def _request_syntax(parsed: commands.Command) -> str:
    """The whole request command, with what was typed filled in and the rest named."""
    words = [parsed.cluster or "CLUSTER", parsed.role or "ROLE",
             _spell(parsed) or "DURATION", parsed.text.strip() or "REASON…"]
    if parsed.namespace:
        words.insert(2, f"-n {parsed.namespace}")
    if parsed.break_glass:
        words.insert(0, "--break-glass")
    return (f"`/k8s-access request {' '.join(words)}`, for example "
            "`/k8s-access request staging edit 4h deploy hotfix` (`/k8s-access clusters` lists "
            "clusters and roles)")


def _form_values(state: dict[str, dict[str, Any]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for block_id, elements in state.items():
        for element in elements.values():
            if element.get("type") == "static_select":
                selected = element.get("selected_option")
                if selected:
                    values[block_id] = selected["value"]
            elif element.get("value") is not None:
                values[block_id] = element["value"]
    return values


def _spell(parsed: commands.Command) -> str | None:
    return format_duration(parsed.duration) if parsed.duration else None


def _revocation(request: AccessRequest) -> str:
    if request.state is State.REVOKED:
        return f"Request #{request.id} is revoked."
    return (f"Revocation of request #{request.id} is under way; the backend failed "
            f"({blocks.escape(request.last_error)}) and the bot keeps retrying.")


def _whoami(who: identity.Identities) -> str:
    escape = blocks.escape
    lines = [f"*Slack*: <@{who.slack_user_id}>", f"*Email*: {escape(who.email) or 'unknown'}"]
    if who.links:
        lines += [f"*{provider.capitalize()}*: `{escape(name)}`"
                  for provider, name in who.links.items()]
    lines += [f"*{cluster}*: {escape(subject)}" for cluster, subject in who.subjects.items()]
    if who.is_admin:
        lines.append("You are an admin.")
    return "\n".join(lines)
