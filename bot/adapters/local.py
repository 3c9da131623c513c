"""Ports for running without Slack: the CLI when Slack is down, or one-shot jobs.

``ConfigDirectory`` knows people from the config's ``users:`` mapping only; ``LogNotifier``
writes each notice to the log, so an operator sees what would have been said.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from bot.config import Config
from bot.domain.model import AccessRequest, MessageRef
from bot.domain.ports import Notice, People, UserInfo
from bot.domain.reviews import AccessReview

log = logging.getLogger("bot.notices")


class ConfigDirectory:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._groups = config.all_approver_groups()

    def user_info(self, user_id: str) -> UserInfo:
        mapping = self._config.user(user_id)
        return UserInfo(slack_user_id=user_id, email=mapping.email if mapping else None)

    def groups_of(self, user_id: str, candidates: frozenset[str]) -> frozenset[str]:
        return frozenset()

    def users(self, principals: Iterable[str]) -> People:
        """Users as themselves; groups have no members this directory knows of."""
        return People(frozenset(p for p in principals if p not in self._groups))


class LogNotifier:
    def remind(self, user_id: str, grants: Sequence[AccessRequest],
               admins: Sequence[str] = ()) -> None:
        log.info("reminder for %s: grants %s end soon", user_id, [g.id for g in grants])

    def review(self, review: AccessReview, admins: Sequence[str] = ()) -> MessageRef | None:
        log.info("access review for %s: %s active grants", review.audience, review.total)
        return None

    def review_attachment(self, review: AccessReview, admins: Sequence[str] = ()) -> None:
        pass  # the log line of :meth:`review` says it all

    def update_review(self, review: AccessReview) -> None:
        log.info("access review for %s: %s", review.audience, review.progress())

    def notify(self, notice: Notice) -> None:
        request = notice.request
        log.info(
            "notice %s: request #%s (%s for %s) is %s",
            notice.kind.value, request.id, request.target, request.requester_id,
            request.state.value,
        )
