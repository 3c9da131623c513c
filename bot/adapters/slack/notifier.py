"""Tell people in Slack: approval messages kept up to date in place, DMs to the requester,
files (kubeconfigs) uploaded into a DM opened with ``conversations.open``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack import blocks
from bot.adapters.slack.directory import SlackDirectory
from bot.config import Config
from bot.domain import lifecycle
from bot.domain.errors import NotFound
from bot.domain.model import AccessRequest
from bot.domain.ports import Notice, NoticeKind, UnitOfWork

log = logging.getLogger(__name__)
APPROVAL = "approval"


class SlackNotifier:
    def __init__(self, client: WebClient, config: Config, directory: SlackDirectory,
                 unit_of_work: Callable[[], UnitOfWork],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._client = client
        self._config = config
        self._directory = directory
        self._unit_of_work = unit_of_work
        self._clock = clock
        self._lock = threading.Lock()
        self._dm_channels: dict[str, str] = {}
        self._next_post: dict[str, float] = {}
        self.per_channel_interval = 1.0

    def remind(self, user_id: str, grants: Sequence[AccessRequest]) -> None:
        self._dm(user_id, *blocks.weekly_reminder(grants, self._clock()), paced=True)

    def review(self, conversation: str, grants: Sequence[AccessRequest]) -> None:
        """The detailed review for the first grants; all of them as a CSV file beyond that."""
        target = self._open_dm(conversation) if conversation[:1] in ("U", "W") \
            else conversation
        detailed = list(grants)[:blocks.REVIEW_DETAILED]
        for text, content in blocks.access_review(detailed, len(grants), self._clock()):
            self._post(target, text, content, paced=True)
        if len(grants) > len(detailed):
            self._client.files_upload_v2(
                channel=target, filename="access-review.csv", title="All active grants",
                content=blocks.access_review_csv(grants))

    def notify(self, notice: Notice) -> None:
        request = notice.request
        if notice.kind is NoticeKind.FILED:
            self._post_approval(request)
        elif notice.kind is not NoticeKind.APPROVED:  # the decision notice showed it already
            self._update_approval(request, blocks.delay_note(notice)
                                  if notice.kind is NoticeKind.SLOW else None)
            if notice.parent is not None:
                self._update_approval(notice.parent)
        if notice.kind in (NoticeKind.FAILED, NoticeKind.RETRYING):
            self._tell_approvers(request)
        if notice.kind is NoticeKind.STILL_PENDING:
            self._remind_approvers(request)
            return
        dm = blocks.requester_message(notice)
        if dm is not None:
            self._dm(request.requester_id, *dm)
        if notice.delivery is not None and notice.delivery.content is not None:
            self._send_file(request.requester_id, notice.delivery.filename or "kubeconfig.yaml",
                            notice.delivery.content, f"Kubeconfig for request #{request.id}")

    # --- approval messages ------------------------------------------------------------

    def _missing(self, request: AccessRequest) -> int:
        try:
            policy = self._config.policy(request.cluster, request.role)
        except NotFound:
            return 0
        return lifecycle.approvals_missing(request, policy)

    def _approver_users(self, request: AccessRequest) -> list[str]:
        policy = self._config.policy(request.cluster, request.role)
        users: set[str] = set()
        for approver in policy.approvers:
            users |= self._directory.members(approver) if approver.startswith("S") \
                else {approver}
        users.discard(request.requester_id)
        return sorted(users)

    def _post_approval(self, request: AccessRequest) -> None:
        assert request.id is not None
        text, content = blocks.approval_message(request, self._missing(request))
        if request.break_glass:
            text = f"<!here> :rotating_light: BREAK-GLASS: {text}"
        channel = self._config.approvers_channel(request.cluster, request.role)
        targets = [channel] if channel else [
            self._open_dm(user) for user in self._approver_users(request)]
        for target in targets:
            response = self._client.chat_postMessage(channel=target, text=text, blocks=content)
            with self._unit_of_work() as uow:
                uow.store.add_message(request.id, APPROVAL, response["channel"], response["ts"])
                uow.commit()

    def _messages(self, request: AccessRequest) -> list[tuple[str, str]]:
        assert request.id is not None
        with self._unit_of_work() as uow:
            return uow.store.messages(request.id, APPROVAL)

    def _update_approval(self, request: AccessRequest, note: str | None = None) -> None:
        text, content = blocks.approval_message(request, self._missing(request), note)
        for channel, ts in self._messages(request):
            try:
                self._client.chat_update(channel=channel, ts=ts, text=text, blocks=content)
            except SlackApiError as error:
                log.warning("could not update the approval message of request %s in %s: %s",
                            request.id, channel, error.response.get("error"))

    def _tell_approvers(self, request: AccessRequest) -> None:
        text = (f":warning: Request #{request.id} ({request.target}): "
                f"{blocks.status(request, self._missing(request))}")
        for channel, ts in self._messages(request)[:1]:
            self._client.chat_postMessage(channel=channel, thread_ts=ts, text=text,
                                          reply_broadcast=request.state.is_final)

    def _remind_approvers(self, request: AccessRequest) -> None:
        text = (f":hourglass: Request #{request.id} ({request.target}) has waited since "
                f"{blocks.when(request.created_at)}: "
                f"{blocks.status(request, self._missing(request))}")
        for channel, ts in self._messages(request):
            self._client.chat_postMessage(channel=channel, thread_ts=ts, text=text,
                                          reply_broadcast=True)

    # --- direct messages --------------------------------------------------------------

    def _open_dm(self, user_id: str) -> str:
        """The DM channel with ``user_id``; Slack keeps it stable, so it is asked for once."""
        with self._lock:
            known = self._dm_channels.get(user_id)
        if known is not None:
            return known
        channel: str = self._client.conversations_open(users=user_id)["channel"]["id"]
        with self._lock:
            self._dm_channels[user_id] = channel
        return channel

    def _post(self, channel: str, text: str, content: list[blocks.Block],
              paced: bool = False) -> None:
        """Post a message; ``paced`` bulk sends keep to one message a second per channel, as
        Slack asks. 429s are waited out by the client either way."""
        if not paced:
            self._client.chat_postMessage(channel=channel, text=text, blocks=content)
            return
        with self._lock:
            wait = self._next_post.get(channel, 0.0) - time.monotonic()
            self._next_post[channel] = max(time.monotonic(), self._next_post.get(
                channel, 0.0)) + self.per_channel_interval
        if wait > 0:
            time.sleep(wait)
        self._client.chat_postMessage(channel=channel, text=text, blocks=content)

    def _dm(self, user_id: str, text: str, content: list[blocks.Block],
            paced: bool = False) -> None:
        self._post(self._open_dm(user_id), text, content, paced)

    def _send_file(self, user_id: str, filename: str, content: bytes, title: str) -> None:
        self._client.files_upload_v2(channel=self._open_dm(user_id), filename=filename,
                                     content=content, title=title)
