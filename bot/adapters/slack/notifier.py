"""Tell people in Slack: approval messages kept up to date in place, DMs to the requester,
files (kubeconfigs) uploaded into their DM. A message to one person is posted with their user
ID as the channel (Slack posts it in the app's DM with them, and answers that DM's ID): one
call, where opening the DM first would take two. A file needs the DM's ID: the one the message
before it answered (a kubeconfig follows the message saying the access is active), else
``conversations.open``'s.

Delivery is checked, never assumed. Every Slack call is made for one recipient and what Slack
answers is translated into an :class:`Undeliverable` of a kind (see
:func:`bot.adapters.slack.client.undeliverable`), logged and counted; one recipient that cannot
be reached never stops the others. A request's approvers are told in their channel, or by DM
when there is no channel or the bot cannot post there; :meth:`SlackNotifier.notify` reports
where it went (:class:`Reach`), so that the use case can tell the requester, and the admins
when nobody could be told.

It only talks to Slack, as Teleport's access-request plugins do: each :class:`Notice` carries
what it needs, resolved by the use case (the audience, the approvals still missing, where the
request's approval messages were posted), and :meth:`SlackNotifier.notify` returns the
approval messages it posted (:class:`Posted`) for the use case to store. It opens no database
transaction and reads no configuration.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from slack_sdk import WebClient

from bot.adapters.slack import blocks
from bot.adapters.slack.client import undeliverable
from bot.domain.errors import Undeliverable
from bot.domain.model import AccessRequest, MessageRef, Reach, Undelivered
from bot.domain.ports import Audience, Metrics, Notice, NoticeKind, Posted
from bot.domain.reasons import ReasonLinks, unlinked
from bot.domain.reviews import AccessReview
from bot.slack_ids import is_direct_message, is_person

log = logging.getLogger(__name__)
T = TypeVar("T")
DM_CHANNELS = 4096
"""DM channel IDs kept, by user (about 100 bytes each): the most recent people messaged."""
UNLISTED = "usergroup_unavailable"
"""How an approver group whose members Slack could not list is reported (see ``blocks``)."""


class SlackNotifier:
    def __init__(self, client: WebClient,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 metrics: Metrics | None = None, links: ReasonLinks = unlinked) -> None:
        """``links`` turns the tickets in a request's reason into links (its role's
        ``ticket_url``, :func:`bot.domain.reasons.linker`); by default nothing is linked."""
        self._client = client
        self._links = links
        self._clock = clock
        self._metrics = metrics
        self._lock = threading.Lock()
        self._dm_channels: dict[str, str] = {}
        self._next_post: dict[str, float] = {}
        self.per_channel_interval = 1.0

    def remind(self, user_id: str, grants: Sequence[AccessRequest],
               admins: Sequence[str] = ()) -> None:
        try:
            self._dm("reminder", user_id,
                     *blocks.weekly_reminder(grants, self._clock(), self._links), paced=True)
        except Undeliverable as error:
            self._report_refused("reminder", error, admins)
            raise

    def review(self, review: AccessReview, admins: Sequence[str] = ()) -> MessageRef | None:
        """The review message alone (:meth:`review_attachment` sends its CSV file)."""
        conversation = review.audience
        try:
            target = self._review_target(conversation)
            text, content = blocks.access_review(review, self._links)
            return self._post("review", target, text, content, paced=True,
                              recipient=conversation)
        except Undeliverable as error:
            self._report_refused("review", error, admins)
            raise

    def review_attachment(self, review: AccessReview, admins: Sequence[str] = ()) -> None:
        """All the review's grants as a CSV file, when there are more than its message shows
        one by one."""
        if review.total <= blocks.REVIEW_DETAILED:
            return
        conversation = review.audience
        try:
            target = self._review_target(conversation)
            self._call("review", conversation, lambda: self._client.files_upload_v2(
                channel=target, filename="access-review.csv", title="All active grants",
                content=blocks.access_review_csv(review.items)))
        except Undeliverable as error:
            self._report_refused("review", error, admins)
            raise

    def _review_target(self, audience: str) -> str:
        return self._open_dm("review", audience) if is_person(audience) else audience

    def update_review(self, review: AccessReview) -> None:
        if review.message is None:
            return
        text, content = blocks.access_review(review, self._links)
        ref = review.message
        self._try(lambda: self._call("review_update", review.audience, lambda: (
            self._client.chat_update(channel=ref.conversation, ts=ref.message, text=text,
                                     blocks=content))))

    def notify(self, notice: Notice) -> Posted | None:
        request = notice.request
        kind = notice.kind
        if kind in (NoticeKind.FILED, NoticeKind.ON_CALL_APPROVED, NoticeKind.ESCALATED):
            return self._announce(notice)
        if kind is NoticeKind.UNREACHABLE:
            return Posted(self._tell_unreachable(notice))
        if kind is NoticeKind.REFRESHED:
            self._update_approval(request, notice.approvals_missing, notice.messages)
            return None
        if kind is not NoticeKind.APPROVED:  # the decision notice showed it already
            self._update_approval(request, notice.approvals_missing, notice.messages,
                                  blocks.delay_note(notice) if kind is NoticeKind.SLOW else None)
            if notice.parent is not None:  # a grant: decided, no approval is missing
                self._update_approval(notice.parent, 0, notice.parent_messages)
        if kind in (NoticeKind.FAILED, NoticeKind.RETRYING):
            self._tell_approvers(notice)
        if kind is NoticeKind.STILL_PENDING:
            return self._remind_approvers(notice)
        later: list[Undeliverable] = []
        # The grantee (the requester unless asked on someone's behalf) hears of their access
        # and receives how to connect; then one who asked for them hears of each outcome,
        # and whether the grantee could be sent how to connect.
        unsent: str | None = None
        dm = blocks.requester_message(notice, self._links)
        if dm is not None:
            try:
                self._dm("requester", request.grantee, *dm)
            except Undeliverable as error:
                later.append(error)
                unsent = error.error
        if notice.delivery is not None and notice.delivery.content is not None:
            delivery = notice.delivery
            try:
                self._send_file(request.grantee, delivery.filename or "kubeconfig.yaml",
                                delivery.content or b"", f"Kubeconfig for request #{request.id}")
            except Undeliverable as error:  # the file is gone with it: say so
                unsent = unsent or error.error
                text = blocks.file_undelivered(request, error.error)
                self._try(lambda: self._dm("requester", request.grantee, *blocks.reply(text)))
        behalf = blocks.behalf_message(notice, unsent)
        if behalf is not None:
            try:
                self._dm("requester", request.requester_id, *behalf)
            except Undeliverable as error:
                later.append(error)
        if later:  # everything else was tried; a caller that sends once decides what to do
            raise later[0]
        return None

    # --- approval messages ------------------------------------------------------------

    def _announce(self, notice: Notice) -> Posted:
        """Post the approval message in the approvers' conversation when the audience names
        one, else DM each approver, each on their own."""
        request = notice.request
        audience = notice.audience or Audience()
        text, content = blocks.approval_message(request, notice.approvals_missing,
                                                links=self._links)
        if request.break_glass:
            text, content = blocks.break_glass_announcement(text, content)
        if notice.kind is NoticeKind.ON_CALL_APPROVED:
            text, content = blocks.on_call_announcement(request, self._links)
        if notice.kind is NoticeKind.ESCALATED:
            text, content = blocks.escalated(text, content)
        channel = audience.conversation
        if channel:
            try:
                posted = self._post_approval("approval", channel, channel, text, content)
                return Posted(Reach(channel=channel), (posted,))
            except Undeliverable as error:
                log.error("request %s: the approvers channel %s refused the approval message "
                          "(%s)", request.id, channel, error.error)
                refused = Undelivered(channel, error.error, error.retryable)
                return Posted(Reach(undelivered=(refused,)))
        undelivered = [Undelivered(group, UNLISTED, retryable=True) for group in audience.unlisted]
        reached: list[str] = []
        messages: list[MessageRef] = []
        for user in audience.approvers:
            try:
                messages.append(self._post_approval("approval_dm", user, user, text, content))
                reached.append(user)
            except Undeliverable as error:
                undelivered.append(Undelivered(user, error.error, error.retryable))
        if not reached:
            log.error("request %s reached no approver: %s", request.id,
                      ", ".join(f"{u.recipient} {u.error}" for u in undelivered) or "none set")
        return Posted(Reach(people=tuple(reached), undelivered=tuple(undelivered)),
                      tuple(messages))

    def _post_approval(self, purpose: str, recipient: str, channel: str, text: str,
                       content: list[blocks.Block]) -> MessageRef:
        response = self._call(purpose, recipient, lambda: self._client.chat_postMessage(
            channel=channel, text=text, blocks=content))
        return MessageRef(response["channel"], response["ts"])

    def _tell_unreachable(self, notice: Notice) -> Reach:
        """Nobody could be told of the request: tell the admins, each on their own, then the
        requester (saying whether the admins know). The admins told, as ``people``."""
        request = notice.request
        reach = notice.reach or Reach()
        alert = blocks.unreachable_alert(request, reach)
        told: list[str] = []
        for admin in (notice.audience or Audience()).admins:
            try:
                self._dm("admin", admin, *blocks.reply(alert))
                told.append(admin)
            except Undeliverable:
                pass  # logged and counted; the others are still told
        if not told:
            log.error("request %s reached no approver and no admin", request.id)
        truth = blocks.unreachable_message(request, Reach(
            channel=reach.channel, people=reach.people, undelivered=reach.undelivered,
            admins=tuple(told)))
        self._try(lambda: self._dm("requester", request.requester_id, *blocks.reply(truth)))
        return Reach(people=tuple(told))

    def _report_refused(self, purpose: str, error: Undeliverable,
                        admins: Sequence[str]) -> None:
        """Tell the admins of a message Slack refused as invalid: it is not sent again, and
        only a change to the bot makes it fit."""
        if error.kind != Undeliverable.INVALID:
            return
        text = blocks.refused_report(purpose, error.recipient, error.error)
        for admin in admins:
            self._try(lambda a=admin: self._dm(  # type: ignore[misc]
                "admin", a, *blocks.reply(text)))

    def _update_approval(self, request: AccessRequest, missing: int,
                         messages: Sequence[MessageRef], note: str | None = None) -> None:
        if not messages:  # none to update: nothing to build
            return
        text, content = blocks.approval_message(request, missing, note, self._links)
        for ref in messages:
            self._try(lambda c=ref.conversation, t=ref.message: self._call(  # type: ignore[misc]
                "approval_update", c, lambda: self._client.chat_update(
                    channel=c, ts=t, text=text, blocks=content)))

    def _tell_approvers(self, notice: Notice) -> None:
        request = notice.request
        text = blocks.outcome_reply(request, notice.approvals_missing)
        for ref in notice.messages[:1]:
            self._try(lambda c=ref.conversation, t=ref.message: self._call(  # type: ignore[misc]
                "approval_thread", c, lambda: self._client.chat_postMessage(
                    channel=c, thread_ts=t, text=text, reply_broadcast=request.state.is_final)))

    def _remind_approvers(self, notice: Notice) -> Posted:
        """Nudge the approvers in the threads of their messages; where the first notice never
        arrived, there is no thread: post the approval message now."""
        request = notice.request
        if not notice.messages:
            return self._announce(notice)
        text = blocks.waiting_reply(request, notice.approvals_missing)
        reached: list[str] = []
        undelivered: list[Undelivered] = []
        for ref in notice.messages:
            channel = ref.conversation
            try:
                self._call("approval_thread", channel, lambda c=channel, t=ref.message: (  # type: ignore[misc]
                    self._client.chat_postMessage(channel=c, thread_ts=t, text=text,
                                                  reply_broadcast=True)))
                reached.append(channel)
            except Undeliverable as error:
                undelivered.append(Undelivered(channel, error.error, error.retryable))
        return Posted(Reach(channel=reached[0] if reached else None,
                            undelivered=tuple(undelivered)))

    # --- calls to Slack ---------------------------------------------------------------

    def _call(self, purpose: str, recipient: str, call: Callable[[], T]) -> T:
        """Make one call for ``recipient``; what Slack refuses becomes an
        :class:`Undeliverable`, logged and counted under ``purpose``."""
        try:
            return call()
        except Exception as error:
            failure = undeliverable(error, recipient)
            if failure is None:
                raise
            log.warning("%s message to %s not delivered: %s (%s)", purpose, recipient,
                        failure.message, failure.kind)
            if self._metrics is not None:
                self._metrics.undelivered(purpose, failure.error, failure.kind)
            raise failure from None

    @staticmethod
    def _try(send: Callable[[], object]) -> None:
        """Send, and go on when it could not be delivered (already logged and counted)."""
        with contextlib.suppress(Undeliverable):
            send()

    # --- direct messages --------------------------------------------------------------

    def _open_dm(self, purpose: str, user_id: str) -> str:
        """The DM channel with ``user_id``; Slack keeps it stable, so it is asked for once, and
        not at all when a message posted to them has answered it (:meth:`_dm`)."""
        with self._lock:
            known = self._dm_channels.get(user_id)
        if known is not None:
            return known
        channel: str = self._call(purpose, user_id, lambda: self._client.conversations_open(
            users=user_id))["channel"]["id"]
        self._remember_dm(user_id, channel)
        return channel

    def _remember_dm(self, user_id: str, channel: str) -> None:
        """Keep the DM channel with ``user_id`` as the most recent; past :data:`DM_CHANNELS`,
        the least recently messaged is forgotten."""
        with self._lock:
            self._dm_channels.pop(user_id, None)  # to the end: a dict keeps insertion order
            self._dm_channels[user_id] = channel
            if len(self._dm_channels) > DM_CHANNELS:
                del self._dm_channels[next(iter(self._dm_channels))]

    def _post(self, purpose: str, channel: str, text: str, content: list[blocks.Block],
              paced: bool = False, recipient: str | None = None) -> MessageRef:
        """Post a message in ``channel`` (a user's ID posts in the DM with them); ``paced``
        bulk sends keep to one message a second per channel, as Slack asks. 429s are waited
        out by the client either way."""
        if paced:
            with self._lock:
                wait = self._next_post.get(channel, 0.0) - time.monotonic()
                self._next_post[channel] = max(time.monotonic(), self._next_post.get(
                    channel, 0.0)) + self.per_channel_interval
            if wait > 0:
                time.sleep(wait)
        response = self._call(purpose, recipient or channel,
                              lambda: self._client.chat_postMessage(
                                  channel=channel, text=text, blocks=content))
        return MessageRef(response["channel"], response["ts"])

    def _dm(self, purpose: str, user_id: str, text: str, content: list[blocks.Block],
            paced: bool = False) -> None:
        """Post to ``user_id``; Slack answers the DM's channel ID, kept for a file sent them
        next (a kubeconfig after the message saying the access is active)."""
        posted = self._post(purpose, user_id, text, content, paced, recipient=user_id)
        if is_person(user_id) and is_direct_message(posted.conversation):
            self._remember_dm(user_id, posted.conversation)

    def _send_file(self, user_id: str, filename: str, content: bytes, title: str) -> None:
        channel = self._open_dm("file", user_id)
        self._call("file", user_id, lambda: self._client.files_upload_v2(
            channel=channel, filename=filename, content=content, title=title))
