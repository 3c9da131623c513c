"""One handler per verb of ``/k8s-access``, shared by the slash command, the buttons and forms.

Each handler takes its verb's input already typed (by :mod:`~bot.adapters.slack.commands` from
the command's text, or by :mod:`~bot.adapters.slack.handling` from a button or a form), calls one
use case, and renders the answer with the pure builders of :mod:`~bot.adapters.slack.blocks`.
The rules are the domain's: a handler decides nothing a use case or the lifecycle decides. A
:class:`~bot.domain.errors.DomainError` a handler raises is the person's to read; the caller
turns it into the answer (:meth:`Handling.run <bot.adapters.slack.handling.Handling.run>`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack import blocks, commands
from bot.adapters.slack.forms import AccessWanted, allowed_pairs, open_form, request_form
from bot.domain import eligibility, lifecycle, reasons
from bot.domain.durations import format_duration
from bot.domain.errors import DomainError
from bot.domain.model import State
from bot.domain.reviews import AccessReview
from bot.services import access, asking, grants, identity, reviews
from bot.services.context import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    text: str
    blocks: list[blocks.Block] = field(default_factory=list)


def reply(text: str) -> Reply:
    """An answer in mrkdwn the bot wrote; typed parts must already be escaped."""
    return Reply(*blocks.reply(text))


class Handlers:
    def __init__(self, ctx: Context, client: WebClient | None = None) -> None:
        self.ctx = ctx
        self.client = client
        """Each request's reason with its tickets linked, by its role's ``ticket_url``."""

    @cached_property
    def links(self) -> reasons.ReasonLinks:
        """Turns the tickets in a reason into links, by each role's ``ticket_url``."""
        return reasons.linker(self.ctx.config.policies)

    # --- verbs that only read -----------------------------------------------------------

    def help(self) -> Reply:
        return reply(commands.help_text())

    def clusters(self, user_id: str) -> Reply:
        """The clusters and roles ``user_id`` may ask for (admins: all)."""
        return reply(blocks.clusters_overview(self.ctx.config, allowed_pairs(self.ctx, user_id)))

    def whoami(self, user_id: str) -> Reply:
        return reply(_whoami(identity.whoami(self.ctx, user_id)))

    def listing(self, user_id: str, scope: str) -> Reply:
        found = access.list_requests(self.ctx, user_id, scope)
        return Reply(*blocks.listing(found.scope.value, found.requests, self.ctx.clock(),
                                     self.links))

    # --- requests and decisions ---------------------------------------------------------

    def request(self, user_id: str, wanted: AccessWanted,
                trigger_id: str | None = None) -> Reply | None:
        """File the request, or open the form when it lacks what the requester must say."""
        if not self._complete(user_id, wanted):
            assert self.client is not None
            open_form(self.client, trigger_id,
                      request_form(self.ctx, user_id, wanted.prefill()),
                      instead=wanted.command())
            return None
        assert wanted.cluster is not None and wanted.role is not None
        filed = access.file_request(
            self.ctx, user_id, wanted.cluster, wanted.role, duration=wanted.duration,
            reason=wanted.reason, namespace=wanted.namespace, break_glass=wanted.break_glass,
            user_csr=wanted.user_csr, grantee_id=wanted.grantee_id, at=wanted.at)
        tz = self.ctx.directory.user_info(user_id).tz if filed.window_start else None
        return reply(blocks.filed_message(filed, filed.approvals_missing, tz))

    def opens_form(self, user_id: str, wanted: AccessWanted) -> bool:
        """Whether :meth:`request` would only open the form; False when it would file the
        request or refuse it (an unknown cluster or role, a role the person may not ask for)."""
        try:
            return not self._complete(user_id, wanted)
        except DomainError:
            return False

    def _complete(self, user_id: str, wanted: AccessWanted) -> bool:
        """Unknown cluster or role names raise, with the choices; so does a role the person
        may not ask for (for whom they ask), with who may, before any form opens; and so does
        asking for someone whose account cannot receive access (:func:`asking.grantee`), and a
        typed namespace the role does not have (the form could not show it)."""
        if wanted.cluster is None or wanted.role is None:
            if wanted.cluster is not None:
                self.ctx.config.cluster(wanted.cluster)
            asking.grantee(self.ctx, self.ctx.actor(user_id), wanted.grantee_id)
            return False
        policy = self.ctx.config.policy(wanted.cluster, wanted.role)
        if lifecycle.is_complete(policy, reason=wanted.reason, namespace=wanted.namespace,
                                 break_glass=wanted.break_glass):
            return True  # filing checks who asks, for whom
        asking.check_may_ask(self.ctx, user_id, policy, wanted.grantee_id)
        if wanted.namespace is not None:  # the form offers only the role's: refuse, not drop
            lifecycle.check_namespace(policy, wanted.namespace)
        return False

    def approve(self, user_id: str, request_id: int, comment: str = "",
                duration: timedelta | None = None) -> Reply:
        done = access.approve(self.ctx, request_id, user_id, comment, duration)
        length = f" for {format_duration(duration)}" if duration else ""
        return reply(f"You approved request #{request_id}{length}. "
                     f"{blocks.status(done, done.approvals_missing)}")

    def deny(self, user_id: str, request_id: int, reason: str) -> Reply:
        access.deny(self.ctx, request_id, user_id, reason)
        return reply(f"You denied request #{request_id}.")

    def cancel(self, user_id: str, request_id: int) -> Reply:
        access.cancel(self.ctx, request_id, user_id)
        return reply(f"Request #{request_id} is cancelled.")

    def revoke(self, user_id: str, request_id: int, reason: str = "") -> Reply:
        revoked = grants.revoke(self.ctx, request_id, user_id, reason or "revoked in Slack")
        if revoked.state is State.REVOKED:
            return reply(f"Request #{revoked.id} is revoked.")
        return reply(f"Revocation of request #{revoked.id} is under way; the backend failed "
                     f"({blocks.escape(revoked.last_error)}) and the bot keeps retrying.")

    def extend(self, user_id: str, grant_id: int, duration: timedelta,
               reason: str = "") -> Reply:
        extension = access.extend(self.ctx, grant_id, user_id, duration, reason)
        line = blocks.status(extension, extension.approvals_missing)
        if extension.state is State.PENDING:
            line = line.removesuffix(".") + blocks.reach_line(extension.notified)
        return reply(f"Extension #{extension.id} of grant #{grant_id}: {line}")

    # --- the forms behind the Deny and Extend buttons -----------------------------------

    def deny_form(self, user_id: str, request_id: int, trigger_id: str | None) -> None:
        """Open the Deny form for someone who may deny: a refusal is the domain's own, told
        before any of the request's details are shown."""
        request = grants.get(self.ctx, request_id)
        lifecycle.check_deny(request, self.ctx.actor(user_id),
                             self.ctx.config.policy(request.cluster, request.role))
        self._open(trigger_id, blocks.deny_modal(request),
                   f"`/k8s-access deny {request.id} REASON`")

    def extend_form(self, user_id: str, grant_id: int, trigger_id: str | None) -> None:
        """Open the Extend form for the grantee of an active grant (the lifecycle's rule)."""
        grant = grants.get(self.ctx, grant_id)
        lifecycle.check_extend(grant, self.ctx.actor(user_id))
        self._open(trigger_id, blocks.extend_modal(grant),
                   f"`/k8s-access extend {grant.id} DURATION [REASON]`, like "
                   f"`extend {grant.id} 2h still debugging`")

    def request_again(self, user_id: str, request_id: int, trigger_id: str | None) -> None:
        """Open the request form filled in as an ended request was: its cluster, role,
        namespace, duration and reason; and its grantee when someone else clicks (the person
        who asked on their behalf). Only those two may: the form shows the reason."""
        ended = grants.get(self.ctx, request_id)
        eligibility.check_ask_again(ended, user_id)
        wanted = AccessWanted(
            cluster=ended.cluster, role=ended.role, duration=ended.duration,
            reason=ended.reason, namespace=ended.namespace,
            grantee_id=ended.grantee if ended.grantee != user_id else None)
        self._open(trigger_id, request_form(self.ctx, user_id, wanted.prefill()),
                   wanted.command())

    def _open(self, trigger_id: str | None, view: blocks.Block, instead: str) -> None:
        assert self.client is not None
        open_form(self.client, trigger_id, view, instead=instead)

    # --- identity links -----------------------------------------------------------------

    def link(self, user_id: str, username: str) -> Reply:
        link = identity.link_gitlab(self.ctx, user_id, username)
        shown = blocks.escape(link.username)
        if link.confirmed:
            return reply(f"Linked to GitLab user `{shown}`.")
        asked = self._ask_admins(user_id, link.username)
        return reply(f"GitLab does not show `{shown}` with your Slack email, so an admin must "
                     f"confirm the link; {asked}.")

    def confirm_link(self, admin_id: str, user_id: str) -> Reply:
        link = identity.confirm_link(self.ctx, admin_id, user_id)
        return reply(f"{blocks.mention(user_id)} is now linked to GitLab user "
                     f"`{blocks.escape(link.username)}`.")

    def _ask_admins(self, user_id: str, username: str) -> str:
        admins = self.ctx.admins()  # a group Slack cannot list never stops the others
        if self.client is None or not admins:
            return "ask one of the admins"
        text, content = blocks.link_confirmation(user_id, username)
        asked = 0
        for admin in sorted(admins):  # one admin Slack cannot reach never stops the others
            try:
                self.client.chat_postMessage(channel=admin, text=text, blocks=content)
                asked += 1
            except SlackApiError as error:
                log.warning("could not ask admin %s to confirm a GitLab link: %s", admin,
                            error.response.get("error"))
            except OSError as error:  # Slack did not answer: a timeout, a dropped connection
                log.warning("could not ask admin %s to confirm a GitLab link: %s", admin, error)
        return "the admins have been asked" if asked else "no admin could be told: ask one"

    # --- access reviews -----------------------------------------------------------------

    def keep(self, user_id: str, grant_id: int) -> Reply:
        review = reviews.keep(self.ctx, grant_id, user_id)
        return reply(f"You kept grant #{grant_id}: your attestation is recorded"
                     f"{_progress(review)}.")

    def review_revoke(self, user_id: str, grant_id: int) -> Reply:
        revoked, review = reviews.revoke(self.ctx, grant_id, user_id)
        done = "is revoked" if revoked.state is State.REVOKED else (
            f"is being revoked; the backend failed ({blocks.escape(revoked.last_error)}) and "
            "the bot keeps retrying")
        return reply(f"Grant #{grant_id} {done}{_progress(review)}.")


def _progress(review: AccessReview | None) -> str:
    return f" ({review.progress()} in this access review)" if review is not None else ""


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
