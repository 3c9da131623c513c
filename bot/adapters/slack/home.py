"""The App Home tab: a person's grants and requests, and what waits for their decision.

Published in the worker when the tab opens, and again after a button pressed on it did its work.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.adapters.slack import blocks
from bot.domain import reasons
from bot.domain.model import State
from bot.services import access
from bot.services.context import Context

log = logging.getLogger(__name__)


class Home:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def on_opened(self, event: dict[str, Any], client: WebClient) -> None:
        """The ``app_home_opened`` event: publish the Home tab (not the Messages tab)."""
        if event.get("tab", "home") == "home":
            self.publish(client, event["user"])

    def publish(self, client: WebClient, user_id: str) -> None:
        """Publish ``user_id``'s Home tab; a tab Slack refuses stays as it was, logged."""
        ctx = self.ctx
        mine = access.list_requests(ctx, user_id, "mine").requests
        waiting = access.list_requests(ctx, user_id, "pending").requests
        missing = {r.id: r.approvals_missing for r in [*mine, *waiting]
                   if r.id is not None and r.state is State.PENDING}
        try:
            client.views_publish(user_id=user_id,
                                 view=blocks.home_view(mine, waiting, ctx.clock(), missing,
                                                       reasons.linker(ctx.config.policies)))
        except SlackApiError as error:  # the Home tab stays as it was; nobody is waiting on it
            log.warning("App Home of %s not published: Slack answered %s", user_id,
                        error.response.get("error") if error.response is not None else error)
