"""The bot's forms (modals): opening them, reading what was chosen, checking it on submission.

A form opens in the process that acknowledges Slack, right after the ack
(:mod:`~bot.adapters.slack.receiving`): ``views.open`` takes the click's or command's
``trigger_id`` for about 3 seconds only, so it never waits for the worker.
A submission is checked once, when Slack sends it (:meth:`Forms.errors`): what is wrong shows on
its field (``response_action: errors``) and the submission goes no further. Only the checks
that read are done there, the domain's own (:func:`lifecycle.field_errors`,
:func:`lifecycle.check_deny`); the use case itself runs later, in the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack import blocks, clicks, payloads
from bot.domain import eligibility, lifecycle, windows
from bot.domain.durations import format_duration, parse_duration
from bot.domain.eligibility import NotEligible
from bot.domain.errors import DatabaseUnavailable, DomainError, InvalidInput, NotFound
from bot.domain.model import AccessRequest
from bot.domain.policy import RolePolicy
from bot.services import asking, grants
from bot.services.context import Context

log = logging.getLogger(__name__)
TRIGGER_ERRORS = frozenset({"expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"})
"""What ``views.open`` answers when the click or command is too old (3 s) or was used already."""


@dataclass(frozen=True)
class AccessWanted:
    """What a request asks for, as typed after ``/k8s-access request`` or chosen in the form;
    what was left out is None (or empty)."""

    cluster: str | None
    role: str | None
    duration: timedelta | None = None
    reason: str = ""
    namespace: str | None = None
    break_glass: bool = False
    user_csr: str | None = None
    grantee_id: str | None = None
    """Who receives the access when asked on their behalf (``--for``, the form's "For")."""
    at: str | None = None
    """When a scheduled window starts, as typed (``--at``, the form's "Start at")."""

    def prefill(self) -> dict[str, Any]:
        """The request form's initial values (and its ``private_metadata``)."""
        return {"cluster": self.cluster, "role": self.role, "namespace": self.namespace,
                "reason": self.reason, "break_glass": self.break_glass,
                "duration": format_duration(self.duration) if self.duration else None,
                "for": self.grantee_id, "start_at": self.at}

    def command(self) -> str:
        """The whole request command, with what was given filled in and the rest named."""
        words = [self.cluster or "CLUSTER", self.role or "ROLE",
                 self.prefill()["duration"] or "DURATION", self.reason.strip() or "REASON…"]
        if self.namespace:
            words.insert(2, f"-n {self.namespace}")
        if self.break_glass:
            words.insert(0, "--break-glass")
        if self.at:
            words.insert(len(words) - 1, f"--at {self.at}")
        if self.grantee_id:
            words.insert(0, f"--for <@{self.grantee_id}>")
        return (f"`/k8s-access request {' '.join(words)}`, for example "
                "`/k8s-access request staging edit 4h deploy hotfix` (`/k8s-access clusters` "
                "lists clusters and roles)")


def values(view: dict[str, Any]) -> dict[str, str]:
    """A submitted view's values by block ID: the typed text, or the chosen option's value."""
    found: dict[str, str] = {}
    for block_id, elements in view["state"]["values"].items():
        for element in elements.values():
            if element.get("type") == "static_select":
                chosen = element.get("selected_option")
                if chosen:
                    found[block_id] = chosen["value"]
            elif element.get("type") == "users_select":
                if element.get("selected_user"):
                    found[block_id] = element["selected_user"]
            elif element.get("value") is not None:
                found[block_id] = element["value"]
    return found


def access_wanted(view: dict[str, Any]) -> AccessWanted:
    """What a checked request form asks for (see :meth:`Forms.errors`)."""
    chosen = values(view)
    return AccessWanted(
        cluster=chosen["cluster"], role=chosen["role"],
        duration=parse_duration(chosen["duration"]), reason=chosen.get("reason", ""),
        namespace=chosen.get("namespace"),
        break_glass=bool(payloads.form_memory(view).get("break_glass")),
        user_csr=chosen.get("csr") or None, grantee_id=chosen.get("for") or None,
        at=chosen.get("start_at") or None)


def open_form(client: WebClient, trigger_id: str | None, view: dict[str, Any], *,
              instead: str) -> None:
    """Open ``view``; when Slack will not open it (the trigger too old or used, the view
    refused, Slack busy or not answering), :class:`InvalidInput` says what to type instead."""
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
    except OSError as error:  # a timeout or a dropped connection, after the client's retries
        log.warning("views.open got no answer from Slack: %s", error)
        raise InvalidInput("The form could not open: Slack did not answer in time. Type the "
                           f"command instead: {instead}") from None


class Forms:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def errors(self, body: dict[str, Any]) -> dict[str, str]:
        """What is wrong with a submitted form, by block ID; empty for anything else, and for
        a form that may go on to the worker."""
        view = body.get("view") or {}
        if body.get("type") != "view_submission":
            return {}
        callback = view.get("callback_id")
        if callback == blocks.REQUEST_MODAL:
            return self._request_errors(values(view),
                                        bool(payloads.form_memory(view).get("break_glass")),
                                        str(body["user"]["id"])) \
                or self._asker_errors(str(body["user"]["id"]), values(view))
        if callback == blocks.EXTEND_MODAL:
            return _duration_errors(values(view)) or self._extend_errors(view)
        if callback == blocks.DENY_MODAL:
            return self._deny_errors(str(body["user"]["id"]), view)
        return {}

    def _request_errors(self, chosen: dict[str, str], break_glass: bool,
                        user_id: str) -> dict[str, str]:
        config = self.ctx.config
        if chosen.get("cluster") not in config.clusters:
            return {"cluster": "Choose a cluster."}
        if chosen.get("role") not in config.clusters[chosen["cluster"]].roles:
            return {"role": "Choose a role."}
        wrong = _duration_errors(chosen)
        if wrong:
            return wrong
        policy = config.policy(chosen["cluster"], chosen["role"])
        return lifecycle.field_errors(
            policy, duration=parse_duration(chosen["duration"]), reason=chosen.get("reason", ""),
            namespace=chosen.get("namespace"), break_glass=break_glass,
        ) | self._start_errors(policy, chosen.get("start_at"), user_id)

    def _start_errors(self, policy: RolePolicy, at: str | None, user_id: str) -> dict[str, str]:
        """What is wrong with the "Start at" field, read in the person's Slack time zone. When
        Slack cannot say which zone that is now, the worker checks it (and answers) instead."""
        if not at or not at.strip():
            return {}
        try:
            tz = self.ctx.directory.user_info(user_id).tz
        except DomainError:
            return {}
        try:
            windows.schedule(at, now=self.ctx.clock(), tz=tz,
                             max_ahead=policy.max_schedule_ahead)
        except DomainError as error:
            return {"start_at": error.message}
        return {}

    def _asker_errors(self, user_id: str, chosen: dict[str, str]) -> dict[str, str]:
        """Who asks, and for whom: refused on the role (not eligible) or on "For"."""
        return _refused("for", "who a request form asks for", lambda: asking.check_may_ask(
            self.ctx, user_id, self.ctx.config.policy(chosen["cluster"], chosen["role"]),
            chosen.get("for")),
            on=lambda error: "role" if isinstance(error, NotEligible) and error.asking
            else "for")

    def _form_request(self, view: dict[str, Any]) -> AccessRequest:
        """The request a Deny or Extend form is about; a form naming none is broken."""
        try:
            return grants.get(self.ctx, payloads.view_request_id(view))
        except NotFound:
            raise clicks.BrokenButton(str(view["callback_id"]), "form") from None

    def _extend_errors(self, view: dict[str, Any]) -> dict[str, str]:
        """The Extend form goes on only about a request that exists (the worker checks the
        rest, as for the command)."""
        return _refused("duration", "an Extend form", lambda: self._form_request(view))

    def _deny_errors(self, user_id: str, view: dict[str, Any]) -> dict[str, str]:
        """The Deny form goes on only from someone who may deny, with a reason."""
        def check() -> None:
            request = self._form_request(view)
            lifecycle.check_deny(request, self.ctx.actor(user_id),
                                 self.ctx.config.policy(request.cluster, request.role),
                                 values(view).get("reason", ""))

        return _refused("reason", "a Deny form", check)

    def refresh_request_form(self, body: dict[str, Any], client: WebClient) -> None:
        """The cluster or role changed in the request form: rebuild it with the right choices."""
        view = body["view"]
        user_id = str(body["user"]["id"])
        prefill = {**payloads.form_memory(view), **values(view)}
        if body["actions"][0]["action_id"] == blocks.PICK_CLUSTER:
            prefill.pop("role", None)
            prefill.pop("namespace", None)
        try:
            client.views_update(view_id=view["id"], hash=view.get("hash"),
                                view=request_form(self.ctx, user_id, prefill))
        except SlackApiError as error:  # a newer pick won (hash_conflict), or the form closed
            log.warning("could not update the request form: %s", error.response.get("error"))


def allowed_pairs(ctx: Context, user_id: str) -> set[tuple[str, str]]:
    """The (cluster, role) pairs ``user_id`` may ask for (:func:`asking.askable`)."""
    return {(policy.cluster, policy.role) for policy in asking.askable(ctx, user_id)}


def request_form(ctx: Context, user_id: str, prefill: dict[str, Any]) -> dict[str, Any]:
    """The request form as ``user_id`` may fill it in: the roles they may ask for, and "For"
    where they may ask on someone else's behalf."""
    actor = ctx.actor(user_id)
    askable = asking.askable(ctx, user_id)
    return blocks.request_modal(
        ctx.config, prefill, {(p.cluster, p.role) for p in askable},
        {(p.cluster, p.role) for p in askable if eligibility.may_request_for_others(p, actor)})


def _refused(field: str, what: str, check: Callable[[], object], *,
             on: Callable[[DomainError], str] | None = None) -> dict[str, str]:
    """``check``'s refusal, as the form's error on ``field`` (or the field ``on`` names for
    it); a failure to check ``what`` is logged and asks the person to try again."""
    try:
        check()
    except DomainError as error:
        return {on(error) if on else field: error.message}
    except DatabaseUnavailable:
        raise  # the receiver answers it, whatever the form
    except Exception:
        log.exception("could not check %s", what)
        return {field: "Something went wrong; try again."}
    return {}


def _duration_errors(chosen: dict[str, str]) -> dict[str, str]:
    try:
        parse_duration(chosen.get("duration", ""))
    except DomainError as error:
        return {"duration": error.message}
    return {}
